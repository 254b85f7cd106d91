// Package apiserver is svcnet's generic Kubernetes REST layer: one
// http.Handler serving every registry.Kind from a storage.Interface (etcd),
// speaking the same wire protocol as kube-apiserver so that unmodified
// clients - kubectl, client-go typed clients and informers, kube-proxy,
// CoreDNS - work against it. It is hand-written on apimachinery and does not
// use k8s.io/apiserver.
//
// # Request flow
//
//	ServeHTTP
//	  parseRequestInfo      path -> verb, group, version, namespace, resource, name, subresource (requestinfo.go)
//	  authorize             Config.Authorizer on auth.Attributes -> 403 Status (server.go)
//	  serveNonResource      /version, /healthz|livez|readyz, /openapi/*, discovery (health.go, server.go)
//	  serveResource         verb dispatch (server.go)
//	    get/list            get_list.go, list_pages.go (limit/continue),
//	                        list_snapshot.go (later pages cut from one read),
//	                        list_build.go, list_raw.go (fast LIST paths),
//	                        list_table.go (Table JSON written directly)
//	    watch               watch.go, watch_hub.go (one storage watch per
//	                        resource, decoded and encoded once, fanned out)
//	    create/update       create_update.go, write.go (stack.go: writes
//	                        grow their goroutine stack once)
//	    patch               patch.go
//	    delete(collection)  delete.go, namespace_cleanup.go
//	    status/scale/binding       server.go, subresources.go
//	    pods/log, pods/exec        podproxy.go: proxied to the pod's node agent
//	                               (internal/agent/kubeletserver) with the
//	                               apiserver-kubelet-client certificate
//
// # Objects, codecs and storage
//
// Objects are the versioned k8s.io/api Go types; the scheme is client-go's
// plus meta.k8s.io/v1 Table and PartialObjectMetadata (negotiate.go). Request
// bodies are JSON, YAML or protobuf (by Content-Type); responses follow
// Accept, including the as=Table / as=PartialObjectMetadata(List) forms
// (response.go, table.go). Storage holds protobuf without
// metadata.resourceVersion under KeyPrefix+"<group|core>/<resource>/[<ns>/]<name>";
// an object's resourceVersion is its key's ModRevision and a list's is the
// revision it was read at (resource.go).
//
// # Writes
//
// Every write runs the kind's Strategy the way kube-apiserver's generic
// registry does: create = system metadata (uid, creationTimestamp,
// generation 1, generateName), PrepareForCreate, Default, Validate (422 with
// field causes), then the Allocator loop and a Txn that requires the key to
// be absent (409 AlreadyExists). Update (PUT, patches, /status, /scale) is a
// read-modify-compare-and-swap loop on the key's ModRevision: a stale
// resourceVersion in the request is a 409 with kube-apiserver's text, a lost
// race is retried. managedFields are maintained on every write by
// apimachinery's field manager, which also implements server-side apply.
// Deletion honours finalizers, pod grace periods and namespace termination
// (delete.go). dryRun=All runs everything but the Txn. The namespace check
// of a create (NamespaceLifecycle) is answered from a watch-fed cache of
// active namespaces while Run is active, with a live read on any miss
// (nscache.go).
//
// # Lists
//
// A LIST without limit reads the whole prefix at one revision. With limit it
// is paged as kube-apiserver pages it: pages are read at the first page's
// revision, the continue token is base64 JSON {v, rv, start} like upstream's,
// and a compacted revision is 410 Gone (list_pages.go). Stored objects are
// decoded straight into the list's Items slice (list_build.go); an
// unfiltered protobuf LIST is not decoded at all but spliced from the stored
// bytes (list_raw.go).
//
// # Errors
//
// All failures are metav1.Status objects from apimachinery's api/errors
// constructors (errors.go), so kubectl prints what it prints against a real
// cluster.
package apiserver
