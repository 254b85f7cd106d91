package apiserver

import (
	"fmt"
	"mime"
	"net/http"
	"sort"
	"strconv"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
)

// newScheme returns the scheme every request is decoded and encoded with:
// all k8s.io/api types (what client-go knows) plus meta.k8s.io/v1 Table and
// PartialObjectMetadata(List). It is private to the server so that nothing
// registered here leaks into client-go's global scheme.
func newScheme() *runtime.Scheme {
	s := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(s))
	utilruntime.Must(metav1.AddMetaToScheme(s))
	metav1.AddToGroupVersion(s, schema.GroupVersion{Version: "v1"})
	return s
}

// Media types the server reads and writes.
const (
	mediaJSON     = runtime.ContentTypeJSON
	mediaYAML     = runtime.ContentTypeYAML
	mediaProtobuf = runtime.ContentTypeProtobuf
)

// Output "as" targets (the as= parameter of an Accept media range).
const (
	asObject      = ""
	asTable       = "Table"
	asPartial     = "PartialObjectMetadata"
	asPartialList = "PartialObjectMetadataList"
)

// mediaRange is one entry of an Accept header.
type mediaRange struct {
	typ, sub string
	params   map[string]string
	q        float64
}

// parseAccept splits an Accept header into media ranges ordered by
// preference (q, then header order). Unparseable entries are skipped.
func parseAccept(header string) []mediaRange {
	var out []mediaRange
	for _, part := range strings.Split(header, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		mt, params, err := mime.ParseMediaType(part)
		if err != nil {
			continue
		}
		typ, sub, _ := strings.Cut(mt, "/")
		q := 1.0
		if v, ok := params["q"]; ok {
			if f, err := strconv.ParseFloat(v, 64); err == nil {
				q = f
			}
		}
		out = append(out, mediaRange{typ: typ, sub: sub, params: params, q: q})
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].q > out[j].q })
	return out
}

// outputTarget is the negotiated form of a response.
type outputTarget struct {
	info runtime.SerializerInfo
	// as is asObject, asTable, asPartial or asPartialList.
	as string
}

// responseShape says what a handler is about to return, which decides the
// "as" conversions that apply.
type responseShape int

const (
	shapeObject responseShape = iota // one object of the resource
	shapeList                        // a list of the resource
	shapeWatch                       // a watch stream of the resource
	shapeOther                       // anything else (Status, Scale…): no conversion
)

// negotiate picks the serializer and conversion for a response from the
// Accept header. The server never answers 406 for a Table request: every kind
// has a Table (NAME and AGE at least).
func (s *Server) negotiate(r *http.Request, shape responseShape) (outputTarget, error) {
	header := r.Header.Get("Accept")
	ranges := parseAccept(header)
	if len(ranges) == 0 {
		return outputTarget{info: s.jsonInfo}, nil
	}
	for _, mr := range ranges {
		if mr.q <= 0 {
			continue
		}
		for _, info := range s.codecs.SupportedMediaTypes() {
			if !mediaMatches(mr, info) {
				continue
			}
			if shape == shapeWatch && info.StreamSerializer == nil {
				continue
			}
			as, ok := asTarget(mr, info, shape)
			if !ok {
				continue
			}
			return outputTarget{info: info, as: as}, nil
		}
	}
	if shape == shapeOther {
		// Errors and other fixed objects are always sent somehow.
		return outputTarget{info: s.jsonInfo}, nil
	}
	return outputTarget{}, notAcceptable(s.codecs)
}

func mediaMatches(mr mediaRange, info runtime.SerializerInfo) bool {
	switch {
	case mr.typ == "*" && mr.sub == "*":
		return info.MediaType == mediaJSON
	case mr.typ != info.MediaTypeType:
		return false
	case mr.sub == "*":
		return info.MediaType == mediaJSON
	default:
		return mr.sub == info.MediaTypeSubType
	}
}

// asTarget checks the as/g/v parameters of a media range against what the
// server can produce for shape.
func asTarget(mr mediaRange, info runtime.SerializerInfo, shape responseShape) (string, bool) {
	as := mr.params["as"]
	if as == "" {
		return asObject, true
	}
	if shape == shapeOther {
		return "", false
	}
	if mr.params["g"] != metav1.GroupName || mr.params["v"] != "v1" {
		return "", false
	}
	switch as {
	case asTable:
		// metav1.Table has no protobuf encoding.
		return asTable, info.MediaType != mediaProtobuf
	case asPartial:
		return asPartial, shape == shapeObject || shape == shapeWatch
	case asPartialList:
		return asPartialList, shape == shapeList
	}
	return "", false
}

func notAcceptable(codecs serializer.CodecFactory) error {
	var types []string
	for _, info := range codecs.SupportedMediaTypes() {
		types = append(types, info.MediaType)
	}
	return apierrors.NewGenericServerResponse(http.StatusNotAcceptable, "", schema.GroupResource{}, "",
		"only the following media types are accepted: "+strings.Join(types, ", "), 0, false)
}

// inputSerializer finds the serializer for a request body's Content-Type
// (JSON when absent).
func (s *Server) inputSerializer(r *http.Request) (runtime.SerializerInfo, error) {
	ct := r.Header.Get("Content-Type")
	if ct == "" {
		return s.jsonInfo, nil
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err == nil {
		for _, info := range s.codecs.SupportedMediaTypes() {
			if info.MediaType == mt {
				return info, nil
			}
		}
	}
	return runtime.SerializerInfo{}, unsupportedMediaType(s.codecs, ct)
}

func unsupportedMediaType(codecs serializer.CodecFactory, got string) error {
	var types []string
	for _, info := range codecs.SupportedMediaTypes() {
		types = append(types, info.MediaType)
	}
	return &apierrors.StatusError{ErrStatus: metav1.Status{
		Status:  metav1.StatusFailure,
		Code:    http.StatusUnsupportedMediaType,
		Reason:  metav1.StatusReasonUnsupportedMediaType,
		Message: fmt.Sprintf("the body of the request was in an unknown format (%q) - accepted media types include: %s", got, strings.Join(types, ", ")),
	}}
}
