package apiserver

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"unicode"
	"unicode/utf8"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/validate/content"
	genericvalidation "k8s.io/apimachinery/pkg/api/validation"
	metainternalversionscheme "k8s.io/apimachinery/pkg/apis/meta/internalversion/scheme"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	metav1validation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// Shared pieces of the write verbs: options, body decoding, strict field
// validation, metadata validation.

// maxBodyBytes caps request bodies, as kube-apiserver does (3 MiB).
const maxBodyBytes = 3 << 20

// writeOpts are the options every write verb takes from the query.
type writeOpts struct {
	dryRun bool
	// manager is the field manager recorded in managedFields.
	manager string
	// validation is Strict, Warn or Ignore.
	validation string
	// force is the apply patch's force flag.
	force bool
}

// parseWriteOptions decodes and validates Create/Update/PatchOptions.
func (rq *request) parseWriteOptions(verb string, patchType types.PatchType) (writeOpts, error) {
	q := rq.r.URL.Query()
	var (
		dryRun          []string
		manager         string
		fieldValidation string
		errs            field.ErrorList
		out             writeOpts
		kind            string
	)
	decode := func(into runtime.Object) error {
		if err := metainternalversionscheme.ParameterCodec.DecodeParameters(q, metav1.SchemeGroupVersion, into); err != nil {
			return apierrors.NewBadRequest(err.Error())
		}
		return nil
	}
	switch verb {
	case "create":
		o := &metav1.CreateOptions{}
		if err := decode(o); err != nil {
			return out, err
		}
		errs, kind = metav1validation.ValidateCreateOptions(o), "CreateOptions"
		dryRun, manager, fieldValidation = o.DryRun, o.FieldManager, o.FieldValidation
	case "update":
		o := &metav1.UpdateOptions{}
		if err := decode(o); err != nil {
			return out, err
		}
		errs, kind = metav1validation.ValidateUpdateOptions(o), "UpdateOptions"
		dryRun, manager, fieldValidation = o.DryRun, o.FieldManager, o.FieldValidation
	case "patch":
		o := &metav1.PatchOptions{}
		if err := decode(o); err != nil {
			return out, err
		}
		errs, kind = metav1validation.ValidatePatchOptions(o, patchType), "PatchOptions"
		dryRun, manager, fieldValidation = o.DryRun, o.FieldManager, o.FieldValidation
		out.force = o.Force != nil && *o.Force
	default:
		return out, fmt.Errorf("apiserver: no write options for verb %q", verb)
	}
	if len(errs) > 0 {
		return out, apierrors.NewInvalid(schema.GroupKind{Group: metav1.GroupName, Kind: kind}, "", errs)
	}
	out.dryRun = len(dryRun) > 0
	out.manager = managerOrUserAgent(manager, rq.r.UserAgent())
	out.validation = fieldValidation
	if out.validation == "" {
		out.validation = metav1.FieldValidationWarn
	}
	return out, nil
}

// managerOrUserAgent returns the field manager: the fieldManager parameter,
// else the user agent up to its first "/".
func managerOrUserAgent(manager, userAgent string) string {
	if manager != "" {
		return manager
	}
	var b strings.Builder
	for _, r := range strings.Split(userAgent, "/")[0] {
		if !unicode.IsPrint(r) {
			continue
		}
		if b.Len()+utf8.RuneLen(r) > metav1validation.FieldManagerMaxLength {
			break
		}
		b.WriteRune(r)
	}
	return b.String()
}

// readBody reads the request body, at most maxBodyBytes.
func (rq *request) readBody() ([]byte, error) {
	body, err := io.ReadAll(io.LimitReader(rq.r.Body, maxBodyBytes+1))
	if err != nil {
		return nil, apierrors.NewBadRequest(fmt.Sprintf("reading request body: %v", err))
	}
	if len(body) > maxBodyBytes {
		return nil, apierrors.NewRequestEntityTooLargeError(fmt.Sprintf("limit is %d", maxBodyBytes))
	}
	return body, nil
}

// decodeObject decodes a create/update body into a new object of res,
// applying fieldValidation: Strict fails with 400, Warn adds Warning headers.
func (rq *request) decodeObject(res *resource, o writeOpts) (runtime.Object, error) {
	body, err := rq.readBody()
	if err != nil {
		return nil, err
	}
	info, err := rq.s.inputSerializer(rq.r)
	if err != nil {
		return nil, err
	}
	decoder := info.Serializer
	if o.validation != metav1.FieldValidationIgnore && info.StrictSerializer != nil {
		decoder = info.StrictSerializer
	}
	defaultGVK := res.gvk
	into := res.kind.New()
	obj, gvk, err := decoder.Decode(body, &defaultGVK, into)
	if err != nil {
		strictErr, isStrict := runtime.AsStrictDecodingError(err)
		switch {
		case isStrict && obj != nil && o.validation == metav1.FieldValidationWarn:
			rq.addStrictWarnings(strictErr.Errors())
		case isStrict && obj != nil && o.validation == metav1.FieldValidationIgnore:
		default:
			return nil, decodeError(res, err, gvk)
		}
	}
	if gvk != nil && gvk.GroupVersion() != res.gvk.GroupVersion() {
		return nil, apierrors.NewBadRequest(fmt.Sprintf("the API version in the data (%s) does not match the expected API version (%s)",
			gvk.GroupVersion(), res.gvk.GroupVersion()))
	}
	if gvk != nil && gvk.Kind != res.gvk.Kind {
		return nil, apierrors.NewBadRequest(fmt.Sprintf("the kind in the data (%s) does not match the expected kind (%s)", gvk.Kind, res.gvk.Kind))
	}
	return obj, nil
}

// decodeError phrases a decoding failure as kube-apiserver does, e.g.
// `Service in version "v1" cannot be handled as a Service: strict decoding
// error: unknown field "spec.foo"`.
func decodeError(res *resource, err error, gvk *schema.GroupVersionKind) error {
	if gvk != nil && gvk.Kind != "" {
		return apierrors.NewBadRequest(fmt.Sprintf("%s in version %q cannot be handled as a %s: %v", gvk.Kind, gvk.Version, res.gvk.Kind, err))
	}
	return apierrors.NewBadRequest(fmt.Sprintf("the object provided is unrecognized (must be of type %s): %v", res.gvk.Kind, err))
}

// addStrictWarnings turns strict-decoding errors into Warning headers.
func (rq *request) addStrictWarnings(errs []error) {
	for _, e := range errs {
		for _, w := range splitYAMLWarnings(e.Error()) {
			rq.w.Header().Add("Warning", warningHeader(w))
		}
	}
}

// splitYAMLWarnings splits a multi-line yaml strict error into its lines.
func splitYAMLWarnings(s string) []string {
	for _, prefix := range []string{"yaml: unmarshal errors:\n", "error converting YAML to JSON: yaml: unmarshal errors:\n"} {
		if rest, ok := strings.CutPrefix(s, prefix); ok {
			var out []string
			for _, line := range strings.Split(rest, "\n") {
				if line = strings.TrimSpace(line); line != "" {
					out = append(out, line)
				}
			}
			return out
		}
	}
	return []string{s}
}

// validatePathSegment is the generic name check of kube-apiserver: any name
// that is a usable path segment.
func validatePathSegment(name string, prefix bool) []string {
	return content.IsPathSegmentName(name)
}

// validateCreateMeta is the generic metadata validation on create, run only
// when the kind's own validation passed (so its messages win).
func validateCreateMeta(res *resource, obj runtime.Object) field.ErrorList {
	return genericvalidation.ValidateObjectMetaAccessor(objectMeta(obj), res.kind.Namespaced, validatePathSegment, field.NewPath("metadata"))
}

// validateUpdateMeta is the generic metadata validation on update.
func validateUpdateMeta(res *resource, obj, old runtime.Object) field.ErrorList {
	m, om := objectMeta(obj), objectMeta(old)
	errs := genericvalidation.ValidateObjectMetaAccessor(m, res.kind.Namespaced, validatePathSegment, field.NewPath("metadata"))
	return append(errs, genericvalidation.ValidateObjectMetaAccessorUpdate(m, om, field.NewPath("metadata"))...)
}

// mergeErrors appends extra to errs, skipping duplicates (the kind's
// strategy may run the same metadata checks).
func mergeErrors(errs, extra field.ErrorList) field.ErrorList {
	seen := map[string]bool{}
	for _, e := range errs {
		seen[e.Error()] = true
	}
	for _, e := range extra {
		if !seen[e.Error()] {
			seen[e.Error()] = true
			errs = append(errs, e)
		}
	}
	return errs
}

// invalid is the 422 for obj.
func invalid(res *resource, obj runtime.Object, errs field.ErrorList) error {
	name := ""
	if obj != nil {
		name = objectMeta(obj).GetName()
	}
	return apierrors.NewInvalid(res.gvk.GroupKind(), name, errs)
}

// ensureNamespace makes obj's namespace agree with the request's, as
// kube-apiserver's EnsureObjectNamespaceMatchesRequestNamespace does.
func (rq *request) ensureNamespace(obj runtime.Object) error {
	m := objectMeta(obj)
	want := rq.namespace
	if !rq.res.kind.Namespaced {
		want = ""
	}
	switch got := m.GetNamespace(); {
	case got == want:
	case got == "":
		m.SetNamespace(want)
	case want == "":
		m.SetNamespace("")
	default:
		return apierrors.NewBadRequest("the namespace of the provided object does not match the namespace sent on the request")
	}
	return nil
}

// httpStatusFor returns 201 for a create, else 200.
func httpStatusFor(created bool) int {
	if created {
		return http.StatusCreated
	}
	return http.StatusOK
}
