package service

import (
	"context"
	"errors"
	"net"
	"strconv"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/yaml"

	"github.com/svcnet/svcnet/internal/registry"
	"github.com/svcnet/svcnet/internal/storage"
)

// protobufCodec encodes v1 objects the way the apiserver stores them.
var protobufCodec = func() runtime.Encoder {
	info, ok := runtime.SerializerInfoForMediaType(scheme.Codecs.SupportedMediaTypes(), runtime.ContentTypeProtobuf)
	if !ok {
		panic("no protobuf serializer")
	}
	return scheme.Codecs.EncoderForVersion(info.Serializer, v1.SchemeGroupVersion)
}()

func encodeService(t testing.TB, svc *v1.Service) []byte {
	t.Helper()
	c := svc.DeepCopy()
	c.ResourceVersion = ""
	data, err := runtime.Encode(protobufCodec, c)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func decodeService(t testing.TB, kv storage.KV) *v1.Service {
	t.Helper()
	obj, _, err := scheme.Codecs.UniversalDeserializer().Decode(kv.Value, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return obj.(*v1.Service)
}

func mustParseCIDR(t testing.TB, s string) *net.IPNet {
	t.Helper()
	_, n, err := net.ParseCIDR(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func svcFromYAML(t testing.TB, s string) *v1.Service {
	t.Helper()
	svc := &v1.Service{}
	if err := yaml.UnmarshalStrict([]byte(s), svc); err != nil {
		t.Fatalf("%v\n%s", err, s)
	}
	if svc.Namespace == "" {
		svc.Namespace = "default"
	}
	return svc
}

// newTestKind builds the kind over store and runs its mirror until the test
// ends.
func newTestKind(t testing.TB, store storage.Interface, cidr string) (*registry.Kind, *Allocations) {
	t.Helper()
	kind, alloc, err := NewKind(Config{ServiceCIDR: mustParseCIDR(t, cidr), Store: store})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = alloc.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return kind, alloc
}

// writer plays the apiserver's part of the registry.Allocator protocol: the
// retry loop of registry.go around Allocate, Validate and one transaction.
type writer struct {
	kind  *registry.Kind
	store storage.Interface
	// attempts counts write attempts, retries included.
	attempts int
}

func serviceKey(svc *v1.Service) string { return ServicesPrefix + svc.Namespace + "/" + svc.Name }

func (w *writer) create(ctx context.Context, in *v1.Service) (*v1.Service, error) {
	s := w.kind.Strategy
	in = in.DeepCopy()
	s.Default(in)
	s.PrepareForCreate(ctx, in)
	for {
		w.attempts++
		obj := in.DeepCopy()
		ops, err := w.kind.Allocator.Allocate(ctx, obj, nil)
		if err != nil {
			return nil, err
		}
		if errs := s.Validate(ctx, obj); len(errs) > 0 {
			return nil, apierrors.NewInvalid(serviceKind, obj.Name, errs)
		}
		key := serviceKey(obj)
		rev, err := w.store.Txn(ctx, append(ops, storage.Put(key, encodeServiceNoT(obj), 0))...)
		if pe, ok := storage.AsPrecondition(err); ok && pe.Key != key {
			if err := w.kind.Allocator.Conflict(obj, pe.Key); err != nil {
				return nil, err
			}
			continue
		}
		if err != nil {
			return nil, err
		}
		obj.ResourceVersion = itoa(rev)
		return obj, nil
	}
}

func (w *writer) get(ctx context.Context, ns, name string) (*v1.Service, *storage.KV, error) {
	kv, err := w.store.Get(ctx, ServicesPrefix+ns+"/"+name)
	if err != nil {
		return nil, nil, err
	}
	obj, _, err := scheme.Codecs.UniversalDeserializer().Decode(kv.Value, nil, nil)
	if err != nil {
		return nil, nil, err
	}
	svc := obj.(*v1.Service)
	svc.ResourceVersion = itoa(kv.ModRevision)
	return svc, kv, nil
}

// update replaces the stored Service with in (an unconditional PUT).
func (w *writer) update(ctx context.Context, in *v1.Service) (*v1.Service, error) {
	s := w.kind.Strategy
	in = in.DeepCopy()
	s.Default(in)
	for {
		w.attempts++
		old, kv, err := w.get(ctx, in.Namespace, in.Name)
		if err != nil {
			return nil, err
		}
		obj := in.DeepCopy()
		obj.UID = old.UID
		if obj.ResourceVersion == "" {
			obj.ResourceVersion = old.ResourceVersion // an unconditional update
		}
		s.PrepareForUpdate(ctx, obj, old)
		ops, err := w.kind.Allocator.Allocate(ctx, obj, old)
		if err != nil {
			return nil, err
		}
		if errs := s.ValidateUpdate(ctx, obj, old); len(errs) > 0 {
			return nil, apierrors.NewInvalid(serviceKind, obj.Name, errs)
		}
		key := serviceKey(obj)
		rev, err := w.store.Txn(ctx, append(ops, storage.Put(key, encodeServiceNoT(obj), kv.ModRevision))...)
		if pe, ok := storage.AsPrecondition(err); ok {
			if pe.Key != key {
				if err := w.kind.Allocator.Conflict(obj, pe.Key); err != nil {
					return nil, err
				}
			}
			continue
		}
		if err != nil {
			return nil, err
		}
		obj.ResourceVersion = itoa(rev)
		return obj, nil
	}
}

func (w *writer) delete(ctx context.Context, ns, name string) error {
	for {
		old, kv, err := w.get(ctx, ns, name)
		if err != nil {
			return err
		}
		ops := append(w.kind.Allocator.Release(old), storage.Delete(kv.Key, kv.ModRevision))
		_, err = w.store.Txn(ctx, ops...)
		if _, ok := storage.AsPrecondition(err); ok {
			continue
		}
		return err
	}
}

// encodeServiceNoT encodes without a testing.TB (writer runs in goroutines).
func encodeServiceNoT(svc *v1.Service) []byte {
	c := svc.DeepCopy()
	c.ResourceVersion = ""
	data, err := runtime.Encode(protobufCodec, c)
	if err != nil {
		panic(err)
	}
	return data
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// statusMessage returns the message of an apiserver error.
func statusMessage(err error) string {
	var se apierrors.APIStatus
	if errors.As(err, &se) {
		return se.Status().Message
	}
	if err == nil {
		return ""
	}
	return err.Error()
}

// eventually polls cond until it holds or a generous deadline passes. It
// asserts an outcome, not a duration.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
