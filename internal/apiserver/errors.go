package apiserver

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/svcnet/svcnet/internal/storage"
)

// Every failure reaches the client as a metav1.Status built by the
// apimachinery errors constructors, so kubectl prints exactly what it prints
// against kube-apiserver. Handlers return errors; toStatus turns anything that
// is not already a Status into a 500 (or the matching storage error).

// toStatus converts err into the Status sent to the client.
func toStatus(err error) *apierrors.StatusError {
	var se *apierrors.StatusError
	if errors.As(err, &se) {
		return se
	}
	var apiStatus apierrors.APIStatus
	if errors.As(err, &apiStatus) {
		return &apierrors.StatusError{ErrStatus: apiStatus.Status()}
	}
	switch {
	case storage.IsExpired(err):
		return apierrors.NewResourceExpired(fmt.Sprintf("too old resource version: %v", err))
	case errors.Is(err, context.DeadlineExceeded):
		return apierrors.NewTimeoutError(err.Error(), 1)
	}
	// What kube-apiserver sends for an error that is not a Status: 500 with
	// the error text (kubectl prints "Error from server: <text>").
	return &apierrors.StatusError{ErrStatus: metav1.Status{
		Status:  metav1.StatusFailure,
		Code:    http.StatusInternalServerError,
		Reason:  metav1.StatusReasonUnknown,
		Message: err.Error(),
	}}
}

// writeError sends err as a Status.
func (rq *request) writeError(err error) {
	status := toStatus(err)
	if status.ErrStatus.Code >= 500 && status.ErrStatus.Code != http.StatusGatewayTimeout {
		rq.s.log.Error("request failed", "verb", rq.info.verb, "path", rq.r.URL.Path, "err", err)
	}
	st := status.ErrStatus
	st.Kind, st.APIVersion = "Status", "v1"
	if st.Status == "" {
		st.Status = metav1.StatusFailure
	}
	code := int(st.Code)
	if code == 0 {
		code = http.StatusInternalServerError
	}
	rq.writeRaw(code, &st, shapeOther)
}

// notFoundError is what kube-apiserver answers for a path it does not serve.
func notFoundError() error {
	return &apierrors.StatusError{ErrStatus: metav1.Status{
		Status:  metav1.StatusFailure,
		Code:    http.StatusNotFound,
		Reason:  metav1.StatusReasonNotFound,
		Message: "the server could not find the requested resource",
		Details: &metav1.StatusDetails{},
	}}
}

// conflictModified is the 409 for a stale resourceVersion.
func conflictModified(gr schema.GroupResource, name string) error {
	return apierrors.NewConflict(gr, name, errors.New(optimisticLockErrorMsg))
}

// optimisticLockErrorMsg is kube-apiserver's text for a stale update.
const optimisticLockErrorMsg = "the object has been modified; please apply your changes to the latest version and try again"

// preconditionFailed is kube-apiserver's text for a failed uid or
// resourceVersion precondition.
func preconditionFailed(field, want, have string) error {
	return errors.New("Precondition failed: " + field + " in precondition: " + want + ", " + field + " in object meta: " + have)
}

// warningHeader formats one Warning header value (RFC 7234, code 299 as
// kube-apiserver sends them).
func warningHeader(text string) string {
	text = strings.ReplaceAll(text, `\`, `\\`)
	text = strings.ReplaceAll(text, `"`, `\"`)
	return `299 - "` + text + `"`
}
