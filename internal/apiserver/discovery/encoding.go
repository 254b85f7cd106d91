package discovery

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"

	"github.com/munnerz/goautoneg"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer/protobuf"
)

const (
	mediaJSON     = "application/json"
	mediaProtobuf = "application/vnd.kubernetes.protobuf"
)

// protoSerializer encodes the unversioned meta/v1 discovery types.
var protoSerializer = func() runtime.Serializer {
	s := runtime.NewScheme()
	metav1.AddToGroupVersion(s, schema.GroupVersion{Version: "v1"})
	return protobuf.NewSerializer(s, s)
}()

// document is one discovery object, encoded ahead of time.
type document struct {
	json, proto []byte
}

// newDocument encodes obj. The objects are plain meta/v1 structs, so encoding
// cannot fail short of a programming error, which panics at start-up.
func newDocument(obj runtime.Object) *document {
	j, err := json.Marshal(obj)
	if err != nil {
		panic(fmt.Sprintf("discovery: encoding %T as JSON: %v", obj, err))
	}
	// Protobuf clients decode the envelope's apiVersion, which must name a
	// registered version even where the JSON form leaves it out.
	withVersion := obj.DeepCopyObject()
	withVersion.GetObjectKind().SetGroupVersionKind(schema.GroupVersion{Version: "v1"}.WithKind(obj.GetObjectKind().GroupVersionKind().Kind))
	var pb bytes.Buffer
	if err := protoSerializer.Encode(withVersion, &pb); err != nil {
		panic(fmt.Sprintf("discovery: encoding %T as protobuf: %v", obj, err))
	}
	return &document{json: append(j, '\n'), proto: pb.Bytes()}
}

// writeDocument writes doc in the media type the client prefers.
func writeDocument(w http.ResponseWriter, r *http.Request, doc *document) {
	body, media := doc.json, mediaJSON
	if negotiate(r.Header.Get("Accept")) == mediaProtobuf {
		body, media = doc.proto, mediaProtobuf
	}
	w.Header().Set("Content-Type", media)
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		_, _ = w.Write(body)
	}
}

// negotiate returns the media type to answer with: protobuf when the client
// ranks it above JSON, JSON otherwise (also for unknown types: a discovery
// client must never get 406 here). Clauses with as=/g= parameters ask for
// aggregated discovery, which is not served, and are skipped so that the
// client falls back to the legacy documents.
func negotiate(accept string) string {
	for _, c := range goautoneg.ParseAccept(accept) {
		if _, ok := c.Params["as"]; ok {
			continue
		}
		if _, ok := c.Params["g"]; ok {
			continue
		}
		switch {
		case c.Type == "application" && c.SubType == "vnd.kubernetes.protobuf":
			return mediaProtobuf
		case c.Type == "application" && c.SubType == "json",
			c.Type == "application" && c.SubType == "*",
			c.Type == "*":
			return mediaJSON
		}
	}
	return mediaJSON
}

// writeStatus writes a failure Status as JSON, like kube-apiserver does for
// paths it does not serve.
func writeStatus(w http.ResponseWriter, r *http.Request, code int, reason metav1.StatusReason, msg string) {
	st := metav1.Status{
		TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"},
		Status:   metav1.StatusFailure,
		Message:  msg,
		Reason:   reason,
		Details:  &metav1.StatusDetails{},
		Code:     int32(code),
	}
	body, _ := json.Marshal(&st) // a Status always encodes
	w.Header().Set("Content-Type", mediaJSON)
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	if r.Method != http.MethodHead {
		_, _ = w.Write(append(body, '\n'))
	}
}
