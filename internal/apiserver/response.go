package apiserver

import (
	"bytes"
	"fmt"
	"io"
	"net/http"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// writeObject negotiates the response form from Accept, converts obj into it
// (Table, PartialObjectMetadata…) and writes it with code.
func (rq *request) writeObject(code int, obj runtime.Object, shape responseShape) {
	target, err := rq.s.negotiate(rq.r, shape)
	if err != nil {
		rq.writeError(err)
		return
	}
	out, err := rq.transform(obj, target.as, shape)
	if err != nil {
		rq.writeError(err)
		return
	}
	rq.encodeAndWrite(code, out, target.info)
}

// writeRaw writes obj without conversions (Status and other fixed types).
func (rq *request) writeRaw(code int, obj runtime.Object, shape responseShape) {
	target, err := rq.s.negotiate(rq.r, shape)
	if err != nil {
		target = outputTarget{info: rq.s.jsonInfo}
	}
	rq.encodeAndWrite(code, obj, target.info)
}

func (rq *request) encodeAndWrite(code int, obj runtime.Object, info runtime.SerializerInfo) {
	var buf bytes.Buffer
	if err := rq.s.encode(obj, info, &buf); err != nil {
		rq.s.log.Error("encode response", "type", fmt.Sprintf("%T", obj), "err", err)
		if _, isStatus := obj.(*metav1.Status); isStatus {
			http.Error(rq.w, "failed to encode response", http.StatusInternalServerError)
			return
		}
		rq.writeError(err)
		return
	}
	h := rq.w.Header()
	h.Set("Content-Type", info.MediaType)
	h.Set("X-Content-Type-Options", "nosniff")
	rq.w.WriteHeader(code)
	if rq.r.Method != http.MethodHead {
		_, _ = rq.w.Write(buf.Bytes())
	}
}

// encode writes obj in info's form, in the group version it is registered
// in. JSON Tables take a faster path with the same bytes (list_table.go).
func (s *Server) encode(obj runtime.Object, info runtime.SerializerInfo, w io.Writer) error {
	if t, ok := obj.(*metav1.Table); ok && info.MediaType == mediaJSON {
		if apiVersion, kind, ok := s.tableEncodeKind(t); ok {
			return encodeTableJSON(w, t, apiVersion, kind)
		}
	}
	return s.encoderFor(obj, info.Serializer).Encode(obj, w)
}

// encoderFor returns an encoder writing obj in the group version it is
// registered in.
func (s *Server) encoderFor(obj runtime.Object, ser runtime.Encoder) runtime.Encoder {
	return s.codecs.EncoderForVersion(ser, s.groupVersionOf(obj))
}

func (s *Server) groupVersionOf(obj runtime.Object) schema.GroupVersion {
	gvks, _, err := s.scheme.ObjectKinds(obj)
	if err != nil || len(gvks) == 0 {
		return schema.GroupVersion{Version: "v1"}
	}
	return gvks[0].GroupVersion()
}

// transform converts a response object into the negotiated "as" form.
func (rq *request) transform(obj runtime.Object, as string, shape responseShape) (runtime.Object, error) {
	switch as {
	case asObject:
		return obj, nil
	case asTable:
		opts, err := tableOptions(rq.r)
		if err != nil {
			return nil, err
		}
		return rq.s.toTable(rq.res, obj, shape == shapeList, opts, false)
	case asPartial:
		m, err := meta.Accessor(obj)
		if err != nil {
			return nil, err
		}
		p := meta.AsPartialObjectMetadata(m)
		p.SetGroupVersionKind(metav1.SchemeGroupVersion.WithKind(asPartial))
		return p, nil
	case asPartialList:
		items, err := meta.ExtractList(obj)
		if err != nil {
			return nil, err
		}
		list := &metav1.PartialObjectMetadataList{}
		if lm, err := meta.ListAccessor(obj); err == nil {
			list.ResourceVersion = lm.GetResourceVersion()
			list.Continue = lm.GetContinue()
			list.RemainingItemCount = lm.GetRemainingItemCount()
		}
		for _, item := range items {
			m, err := meta.Accessor(item)
			if err != nil {
				return nil, err
			}
			p := meta.AsPartialObjectMetadata(m)
			p.SetGroupVersionKind(metav1.SchemeGroupVersion.WithKind(asPartial))
			list.Items = append(list.Items, *p)
		}
		return list, nil
	}
	return nil, fmt.Errorf("apiserver: unknown output conversion %q", as)
}
