package apiserver

import (
	"bytes"
	"fmt"
	"mime"
	"net/http"

	jsonpatch "gopkg.in/evanphx/json-patch.v4"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/managedfields"
	"k8s.io/apimachinery/pkg/util/mergepatch"
	"k8s.io/apimachinery/pkg/util/strategicpatch"
	"k8s.io/apimachinery/pkg/util/validation/field"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// PATCH, as kube-apiserver's patch handler: the patch is applied to the
// current object's versioned JSON (json-patch, merge-patch), its map form
// (strategic merge patch, with the Go type's patchStrategy tags) or through
// the field manager (server-side apply). The result then goes through the
// same update path as a PUT, so a write that loses a race is retried with
// the patch re-applied to the new state; a resourceVersion inside the patch
// is a precondition and is never retried.

// maxJSONPatchOperations is kube-apiserver's limit.
const maxJSONPatchOperations = 10000

var patchTypes = map[string]types.PatchType{
	string(types.JSONPatchType):           types.JSONPatchType,
	string(types.MergePatchType):          types.MergePatchType,
	string(types.StrategicMergePatchType): types.StrategicMergePatchType,
	string(types.ApplyYAMLPatchType):      types.ApplyYAMLPatchType,
}

// patchType reads the patch type from Content-Type.
func (rq *request) patchType() (types.PatchType, error) {
	ct := rq.r.Header.Get("Content-Type")
	mt, _, err := mime.ParseMediaType(ct)
	if pt, ok := patchTypes[mt]; err == nil && ok {
		return pt, nil
	}
	return "", &apierrors.StatusError{ErrStatus: metav1.Status{
		Status: metav1.StatusFailure,
		Code:   http.StatusUnsupportedMediaType,
		Reason: metav1.StatusReasonUnsupportedMediaType,
		Message: fmt.Sprintf("the body of the request was in an unknown format (%q) - accepted media types include: %s, %s, %s, %s",
			ct, types.JSONPatchType, types.MergePatchType, types.StrategicMergePatchType, types.ApplyYAMLPatchType),
	}}
}

// handlePatch serves PATCH of an object or its /status.
func (s *Server) handlePatch(rq *request, sub subKind) {
	pt, err := rq.patchType()
	if err != nil {
		rq.writeError(err)
		return
	}
	o, err := rq.parseWriteOptions("patch", pt)
	if err != nil {
		rq.writeError(err)
		return
	}
	body, err := rq.readBody()
	if err != nil {
		rq.writeError(err)
		return
	}
	fm := rq.res.fieldManager
	if sub == subStatus {
		fm = rq.res.statusFieldManager
	}
	p := &patcher{rq: rq, res: rq.res, fm: fm, patchType: pt, body: body, opts: o}
	allowCreate := pt == types.ApplyYAMLPatchType && sub == subMain
	result, err := s.updateObject(rq, rq.info.name, sub, o, allowCreate, p.apply)
	if err != nil {
		rq.writeError(err)
		return
	}
	rq.writeObject(httpStatusFor(result.created), result.obj, shapeObject)
}

// patcher applies one PATCH request's body to an object.
type patcher struct {
	rq        *request
	res       *resource
	fm        *managedfields.FieldManager
	patchType types.PatchType
	body      []byte
	opts      writeOpts
}

// apply is an updateFunc: it returns cur patched (cur nil: apply creates).
func (p *patcher) apply(cur runtime.Object) (runtime.Object, error) {
	if cur == nil {
		if p.patchType != types.ApplyYAMLPatchType {
			return nil, apierrors.NewNotFound(p.res.groupResource(), p.rq.info.name)
		}
		return p.serverSideApply(p.res.kind.New())
	}
	switch p.patchType {
	case types.ApplyYAMLPatchType:
		return p.serverSideApply(cur)
	case types.StrategicMergePatchType:
		obj, err := p.strategicMerge(cur)
		if err != nil {
			return nil, err
		}
		return p.fm.UpdateNoErrors(cur, obj, p.opts.manager), nil
	default:
		obj, err := p.jsonPatch(cur)
		if err != nil {
			return nil, err
		}
		return p.fm.UpdateNoErrors(cur, obj, p.opts.manager), nil
	}
}

// jsonPatch applies a json-patch or merge-patch to cur's JSON.
func (p *patcher) jsonPatch(cur runtime.Object) (runtime.Object, error) {
	var buf bytes.Buffer
	if err := p.res.jsonEncoder.Encode(cur, &buf); err != nil {
		return nil, err
	}
	strictMode := p.opts.validation != metav1.FieldValidationIgnore
	var (
		patched    []byte
		strictErrs []error
		err        error
	)
	switch p.patchType {
	case types.JSONPatchType:
		if strictMode {
			var ops []struct {
				Op    string      `json:"op"`
				Path  string      `json:"path"`
				From  string      `json:"from"`
				Value interface{} `json:"value"`
			}
			if strictErrs, err = kjson.UnmarshalStrict(p.body, &ops); err != nil {
				return nil, apierrors.NewBadRequest(fmt.Sprintf("error decoding patch: %v", err))
			}
			for i, e := range strictErrs {
				strictErrs[i] = fmt.Errorf("json patch %v", e)
			}
		}
		patch, err := jsonpatch.DecodePatch(p.body)
		if err != nil {
			return nil, apierrors.NewBadRequest(err.Error())
		}
		if len(patch) > maxJSONPatchOperations {
			return nil, apierrors.NewRequestEntityTooLargeError(fmt.Sprintf(
				"The allowed maximum operations in a JSON patch is %d, got %d", maxJSONPatchOperations, len(patch)))
		}
		if patched, err = patch.Apply(buf.Bytes()); err != nil {
			return nil, apierrors.NewGenericServerResponse(http.StatusUnprocessableEntity, "", schema.GroupResource{}, "", err.Error(), 0, false)
		}
	case types.MergePatchType:
		if strictMode {
			v := map[string]interface{}{}
			if strictErrs, err = kjson.UnmarshalStrict(p.body, &v); err != nil {
				return nil, apierrors.NewBadRequest(fmt.Sprintf("error decoding patch: %v", err))
			}
		}
		if patched, err = jsonpatch.MergePatch(buf.Bytes(), p.body); err != nil {
			if err == jsonpatch.ErrBadJSONPatch {
				return nil, apierrors.NewBadRequest(err.Error())
			}
			return nil, err
		}
	}

	decoder := p.rq.s.jsonInfo.Serializer
	if strictMode {
		decoder = p.rq.s.jsonInfo.StrictSerializer
	}
	obj := p.res.kind.New()
	_, _, err = decoder.Decode(patched, &p.res.gvk, obj)
	if err != nil {
		strictErr, isStrict := runtime.AsStrictDecodingError(err)
		if !isStrict {
			return nil, apierrors.NewInvalid(schema.GroupKind{}, "", field.ErrorList{
				field.Invalid(field.NewPath("patch"), string(patched), err.Error()),
			})
		}
		strictErrs = append(strictErrs, strictErr.Errors()...)
	}
	if err := p.strictResult(strictErrs, string(patched)); err != nil {
		return nil, err
	}
	return obj, nil
}

// strategicMerge applies a strategic merge patch using the Go type's merge
// keys and strategies.
func (p *patcher) strategicMerge(cur runtime.Object) (runtime.Object, error) {
	orig, err := runtime.DefaultUnstructuredConverter.ToUnstructured(cur)
	if err != nil {
		return nil, err
	}
	strictMode := p.opts.validation != metav1.FieldValidationIgnore
	patchMap := map[string]interface{}{}
	var strictErrs []error
	if strictMode {
		if strictErrs, err = kjson.UnmarshalStrict(p.body, &patchMap); err != nil {
			return nil, apierrors.NewBadRequest(err.Error())
		}
	} else if err := kjson.UnmarshalCaseSensitivePreserveInts(p.body, &patchMap); err != nil {
		return nil, apierrors.NewBadRequest(err.Error())
	}
	schemaObj := p.res.kind.New()
	patched, err := strategicpatch.StrategicMergeMapPatch(orig, patchMap, schemaObj)
	if err != nil {
		return nil, interpretStrategicMergePatchError(err)
	}
	obj := p.res.kind.New()
	if err := runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(patched, obj, strictMode); err != nil {
		strictErr, isStrict := runtime.AsStrictDecodingError(err)
		if !isStrict {
			return nil, apierrors.NewInvalid(schema.GroupKind{}, "", field.ErrorList{
				field.Invalid(field.NewPath("patch"), fmt.Sprintf("%+v", patchMap), err.Error()),
			})
		}
		strictErrs = append(strictErrs, strictErr.Errors()...)
	}
	if err := p.strictResult(strictErrs, fmt.Sprintf("%+v", patchMap)); err != nil {
		return nil, err
	}
	return obj, nil
}

func interpretStrategicMergePatchError(err error) error {
	switch err {
	case mergepatch.ErrBadJSONDoc, mergepatch.ErrBadPatchFormatForPrimitiveList, mergepatch.ErrBadPatchFormatForRetainKeys,
		mergepatch.ErrBadPatchFormatForSetElementOrderList, mergepatch.ErrUnsupportedStrategicMergePatchFormat:
		return apierrors.NewBadRequest(err.Error())
	case mergepatch.ErrNoListOfLists, mergepatch.ErrPatchContentNotMatchRetainKeys:
		return apierrors.NewGenericServerResponse(http.StatusUnprocessableEntity, "", schema.GroupResource{}, "", err.Error(), 0, false)
	}
	return err
}

// strictResult handles the unknown/duplicate fields found in a patch:
// Strict fails (422 on "patch", as upstream), Warn adds warnings.
func (p *patcher) strictResult(errs []error, value string) error {
	if len(errs) == 0 || p.opts.validation == metav1.FieldValidationIgnore {
		return nil
	}
	if p.opts.validation == metav1.FieldValidationWarn {
		p.rq.addStrictWarnings(errs)
		return nil
	}
	return apierrors.NewInvalid(schema.GroupKind{}, "", field.ErrorList{
		field.Invalid(field.NewPath("patch"), value, runtime.NewStrictDecodingError(errs).Error()),
	})
}

// serverSideApply merges the applied configuration into live through the
// field manager; conflicts come back as 409 with one cause per field.
func (p *patcher) serverSideApply(live runtime.Object) (runtime.Object, error) {
	patchObj := &unstructured.Unstructured{Object: map[string]interface{}{}}
	if err := yaml.Unmarshal(p.body, &patchObj.Object); err != nil {
		return nil, apierrors.NewBadRequest(fmt.Sprintf("error decoding patch: %v", err))
	}
	obj, err := p.fm.Apply(live, patchObj, p.opts.manager, p.opts.force)
	if err != nil {
		return nil, err
	}
	if p.opts.validation != metav1.FieldValidationIgnore {
		if err := yaml.UnmarshalStrict(p.body, &map[string]interface{}{}); err != nil {
			if p.opts.validation == metav1.FieldValidationStrict {
				return nil, apierrors.NewBadRequest(fmt.Sprintf("error strict decoding patch: %v", err))
			}
			p.rq.addStrictWarnings([]error{err})
		}
	}
	return obj, nil
}
