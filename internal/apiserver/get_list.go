package apiserver

import (
	"fmt"
	"net/http"
	"strconv"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metainternalversion "k8s.io/apimachinery/pkg/apis/meta/internalversion"
	metainternalversionscheme "k8s.io/apimachinery/pkg/apis/meta/internalversion/scheme"
	metainternalversionvalidation "k8s.io/apimachinery/pkg/apis/meta/internalversion/validation"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/svcnet/svcnet/internal/storage"
)

// handleGet serves GET of one object (and of its /status).
func (s *Server) handleGet(rq *request) {
	obj, _, err := s.getObject(rq, rq.info.name)
	if err != nil {
		rq.writeError(err)
		return
	}
	rq.writeObject(http.StatusOK, obj, shapeObject)
}

// getObject reads one object of rq's resource, with 404 when missing.
func (s *Server) getObject(rq *request, name string) (runtime.Object, *storage.KV, error) {
	kv, err := s.store.Get(rq.ctx, rq.res.key(rq.namespace, name))
	if storage.IsNotFound(err) {
		return nil, nil, apierrors.NewNotFound(rq.res.groupResource(), name)
	}
	if err != nil {
		return nil, nil, err
	}
	obj, err := s.decodeKV(rq.res, kv)
	if err != nil {
		return nil, nil, err
	}
	return obj, kv, nil
}

// handleList serves GET of a collection.
func (s *Server) handleList(rq *request) {
	opts, pred, err := s.listOptions(rq)
	if err != nil {
		rq.writeError(err)
		return
	}
	var list runtime.Object
	if opts.Continue != "" {
		if opts.ResourceVersion != "" && opts.ResourceVersion != "0" {
			rq.writeError(apierrors.NewBadRequest("specifying resource version is not allowed when using continue"))
			return
		}
		start, rev, err := decodeContinue(opts.Continue)
		if err != nil {
			rq.writeError(apierrors.NewBadRequest(fmt.Sprintf("invalid continue token: %v", err)))
			return
		}
		list, err = s.listPage(rq, rq.res, rq.namespace, pred, rev, opts.Limit, start, true, s.newRawListBuilder(rq, rq.res, pred))
		if err != nil {
			rq.writeError(err)
			return
		}
		rq.writeList(list)
		return
	}
	rev, err := s.listRevision(rq, opts)
	if err != nil {
		rq.writeError(err)
		return
	}
	if opts.Limit > 0 {
		list, err = s.listPage(rq, rq.res, rq.namespace, pred, rev, opts.Limit, "", false, s.newRawListBuilder(rq, rq.res, pred))
	} else {
		list, err = s.listAll(rq, rq.res, rq.namespace, pred, rev, s.newRawListBuilder(rq, rq.res, pred))
	}
	if err != nil {
		rq.writeError(err)
		return
	}
	rq.writeList(list)
}

// writeList writes a LIST result, spliced or not.
func (rq *request) writeList(list runtime.Object) {
	if rl, ok := list.(*rawList); ok {
		rq.writeRawList(rl)
		return
	}
	rq.writeObject(http.StatusOK, list, shapeList)
}

// list reads the matching objects of res at rev (0 = latest) into a list
// object whose resourceVersion is the revision read at. It reads the whole
// list; paged lists (limit/continue) go through listPage.
func (s *Server) list(rq *request, res *resource, namespace string, pred predicate, rev int64) (runtime.Object, error) {
	return s.listAll(rq, res, namespace, pred, rev, nil)
}

// listAll is list, spliced into a protobuf body by raw when it is not nil
// (the result is then a *rawList).
func (s *Server) listAll(rq *request, res *resource, namespace string, pred predicate, rev int64, raw *rawListBuilder) (runtime.Object, error) {
	kvs, listRev, err := s.store.List(rq.ctx, res.listPrefix(namespace), rev)
	if storage.IsExpired(err) {
		return nil, apierrors.NewResourceExpired(fmt.Sprintf("The resourceVersion for the provided list is too old: %d", rev))
	}
	if err != nil {
		return nil, err
	}
	if raw != nil {
		spliced := true
		for i := range kvs {
			if spliced = raw.add(&kvs[i]); !spliced {
				break
			}
		}
		if spliced {
			return raw.finish(listRev, "", nil)
		}
	}
	b := s.newListBuilder(res, len(kvs))
	for i := range kvs {
		if _, err := b.add(&kvs[i], pred); err != nil {
			return nil, err
		}
	}
	list, _, err := b.finish(listRev)
	if err != nil {
		return nil, err
	}
	return list, nil
}

// listOptions decodes, defaults and validates the list/watch query the way
// kube-apiserver does, and builds the selector predicate.
func (s *Server) listOptions(rq *request) (*metainternalversion.ListOptions, predicate, error) {
	opts := &metainternalversion.ListOptions{}
	if err := metainternalversionscheme.ParameterCodec.DecodeParameters(rq.r.URL.Query(), metav1.SchemeGroupVersion, opts); err != nil {
		return nil, predicate{}, apierrors.NewBadRequest(err.Error())
	}
	if rq.info.verb == "watch" {
		opts.Watch = true
	}
	metainternalversion.SetListOptionsDefaults(opts, true)
	if errs := metainternalversionvalidation.ValidateListOptions(opts, true); len(errs) > 0 {
		return nil, predicate{}, apierrors.NewInvalid(schema.GroupKind{Group: metav1.GroupName, Kind: "ListOptions"}, "", errs)
	}
	if opts.FieldSelector != nil {
		for _, req := range opts.FieldSelector.Requirements() {
			if !s.supportsFieldLabel(rq.res, req.Field) {
				return nil, predicate{}, apierrors.NewBadRequest(fmt.Sprintf("field label not supported: %s", req.Field))
			}
		}
	}
	if rq.info.nameFromPath {
		// /watch/…/<name>: the name is a field selector.
		nameSel := fields.OneTermEqualSelector("metadata.name", rq.info.name)
		if opts.FieldSelector == nil || opts.FieldSelector.Empty() {
			opts.FieldSelector = nameSel
		} else {
			opts.FieldSelector = fields.AndSelectors(opts.FieldSelector, nameSel)
		}
	}
	return opts, predicate{label: opts.LabelSelector, field: opts.FieldSelector}, nil
}

func (s *Server) supportsFieldLabel(res *resource, label string) bool {
	switch label {
	case "metadata.name":
		return true
	case "metadata.namespace":
		return res.kind.Namespaced
	}
	return res.fieldLabels[label]
}

// parseRV parses a resourceVersion parameter.
func parseRV(rv string) (int64, error) {
	n, err := strconv.ParseInt(rv, 10, 64)
	if err != nil || n < 0 {
		return 0, apierrors.NewBadRequest(fmt.Sprintf("invalid resource version %q", rv))
	}
	return n, nil
}

// listRevision applies the resourceVersion rules of a list:
//
//	""            latest, consistent
//	"0"           any state (we serve the latest)
//	N             not older than N (latest; 504 if N is in the future)
//	N + Exact     exactly N (410 once compacted)
func (s *Server) listRevision(rq *request, opts *metainternalversion.ListOptions) (int64, error) {
	if opts.ResourceVersion == "" || opts.ResourceVersion == "0" {
		return 0, nil
	}
	rv, err := parseRV(opts.ResourceVersion)
	if err != nil {
		return 0, err
	}
	if opts.ResourceVersionMatch == metav1.ResourceVersionMatchExact {
		if err := s.checkNotFuture(rq, rv); err != nil {
			return 0, err
		}
		return rv, nil
	}
	return 0, s.checkNotFuture(rq, rv)
}

// checkNotFuture fails with kube-apiserver's "Too large resource version"
// (a 504 client-go understands) when rv is beyond the store's revision.
func (s *Server) checkNotFuture(rq *request, rv int64) error {
	cur, err := s.store.CurrentRevision(rq.ctx)
	if err != nil {
		return err
	}
	if rv <= cur {
		return nil
	}
	return tooLargeRV(rv, cur)
}

func tooLargeRV(rv, cur int64) error {
	err := apierrors.NewTimeoutError(fmt.Sprintf("Too large resource version: %d, current: %d", rv, cur), 1)
	err.ErrStatus.Details.Causes = []metav1.StatusCause{{
		Type:    metav1.CauseTypeResourceVersionTooLarge,
		Message: "Too large resource version",
	}}
	return err
}
