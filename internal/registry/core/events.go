package core

import (
	"context"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/validate/content"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/svcnet/svcnet/internal/registry"
	"github.com/svcnet/svcnet/internal/registry/generic"
)

// Events returns the Kind for core/v1 events.
func Events() *registry.Kind {
	return &registry.Kind{
		Resource:     corev1.SchemeGroupVersion.WithResource("events"),
		Kind:         "Event",
		SingularName: "event",
		ShortNames:   []string{"ev"},
		Namespaced:   true,
		New:          func() runtime.Object { return &corev1.Event{} },
		NewList:      func() runtime.Object { return &corev1.EventList{} },
		Strategy:     eventStrategy{generic.Base{Namespaced: true, CreateOnUpdate: true, ValidateName: eventName}},
		Table:        &registry.TableConvertor{Columns: eventColumns(), Cells: eventCells},
		Fields:       eventFields,
	}
}

func eventFields(obj runtime.Object) fields.Set {
	ev := obj.(*corev1.Event)
	source := ev.Source.Component
	if source == "" {
		source = ev.ReportingController
	}
	return fields.Set{
		"involvedObject.kind":            ev.InvolvedObject.Kind,
		"involvedObject.namespace":       ev.InvolvedObject.Namespace,
		"involvedObject.name":            ev.InvolvedObject.Name,
		"involvedObject.uid":             string(ev.InvolvedObject.UID),
		"involvedObject.apiVersion":      ev.InvolvedObject.APIVersion,
		"involvedObject.resourceVersion": ev.InvolvedObject.ResourceVersion,
		"involvedObject.fieldPath":       ev.InvolvedObject.FieldPath,
		"reason":                         ev.Reason,
		"reportingComponent":             ev.ReportingController,
		"source":                         source,
		"type":                           ev.Type,
	}
}

func eventColumns() []metav1.TableColumnDefinition {
	doc := corev1.Event{}.SwaggerDoc()
	name := generic.NameColumn()
	name.Priority = 1
	return []metav1.TableColumnDefinition{
		generic.Column("Last Seen", doc["lastTimestamp"], 0),
		generic.Column("Type", doc["type"], 0),
		generic.Column("Reason", doc["reason"], 0),
		generic.Column("Object", doc["involvedObject"], 0),
		generic.Column("Subobject", corev1.ObjectReference{}.SwaggerDoc()["fieldPath"], 1),
		generic.Column("Source", doc["source"], 1),
		generic.Column("Message", doc["message"], 0),
		generic.Column("First Seen", doc["firstTimestamp"], 1),
		generic.Column("Count", doc["count"], 1),
		name,
	}
}

// eventCells is upstream's printEvent in its wide form (the apiserver
// always builds the wide table; kubectl hides the priority-1 columns).
func eventCells(obj runtime.Object) []interface{} {
	ev := obj.(*corev1.Event)
	first := generic.Age(ev.FirstTimestamp)
	if ev.FirstTimestamp.IsZero() {
		first = generic.MicroAge(ev.EventTime)
	}
	last := generic.Age(ev.LastTimestamp)
	if ev.LastTimestamp.IsZero() {
		last = first
	}
	count := ev.Count
	if ev.Series != nil {
		last = generic.MicroAge(ev.Series.LastObservedTime)
		count = ev.Series.Count
	} else if count == 0 {
		count = 1 // singleton events of the new API carry no count
	}
	target := strings.ToLower(ev.InvolvedObject.Kind)
	if ev.InvolvedObject.Name != "" {
		target = fmt.Sprintf("%s/%s", target, ev.InvolvedObject.Name)
	}
	component := firstNonEmpty(ev.Source.Component, ev.ReportingController)
	instance := firstNonEmpty(ev.Source.Host, ev.ReportingInstance)
	source := component
	if instance != "" {
		source = component + ", " + instance
	}
	return []interface{}{
		last,
		ev.Type,
		ev.Reason,
		target,
		ev.InvolvedObject.FieldPath,
		source,
		strings.TrimSpace(ev.Message),
		first,
		int64(count),
		ev.Name,
	}
}

func firstNonEmpty(ss ...string) string {
	for _, s := range ss {
		if s != "" {
			return s
		}
	}
	return ""
}

type eventStrategy struct{ generic.Base }

// eventName accepts any name usable as a path segment: upstream does not
// validate core/v1 event names beyond what its storage keys need.
func eventName(name string, prefix bool) []string {
	if prefix {
		return content.IsPathSegmentPrefix(name)
	}
	return content.IsPathSegmentName(name)
}

func (s eventStrategy) Validate(ctx context.Context, obj runtime.Object) field.ErrorList {
	return append(s.Base.Validate(ctx, obj), validateEvent(obj.(*corev1.Event))...)
}

func (s eventStrategy) ValidateUpdate(ctx context.Context, obj, old runtime.Object) field.ErrorList {
	return append(s.Base.ValidateUpdate(ctx, obj, old), validateEvent(obj.(*corev1.Event))...)
}

// Limits from upstream's event validation.
const (
	reportingInstanceLengthLimit = 128
	actionLengthLimit            = 128
	reasonLengthLimit            = 128
	noteLengthLimit              = 1024
)

// validateEvent is upstream's legacy (core/v1) event validation: the
// namespace must agree with the involved object's, and events of the new
// shape (eventTime set) must say who reported them and why.
func validateEvent(ev *corev1.Event) field.ErrorList {
	var errs field.ErrorList
	nsPath := field.NewPath("involvedObject", "namespace")
	if ev.EventTime.IsZero() {
		if ev.InvolvedObject.Namespace == "" {
			if ev.Namespace != metav1.NamespaceNone && ev.Namespace != metav1.NamespaceDefault {
				errs = append(errs, field.Invalid(nsPath, ev.InvolvedObject.Namespace, "does not match event.namespace"))
			}
		} else if ev.Namespace != ev.InvolvedObject.Namespace {
			errs = append(errs, field.Invalid(nsPath, ev.InvolvedObject.Namespace, "does not match event.namespace"))
		}
		return errs
	}
	if ev.InvolvedObject.Namespace == "" && ev.Namespace != metav1.NamespaceDefault && ev.Namespace != metav1.NamespaceSystem {
		errs = append(errs, field.Invalid(nsPath, ev.InvolvedObject.Namespace, "does not match event.namespace"))
	}
	rc := field.NewPath("reportingComponent")
	if ev.ReportingController == "" {
		errs = append(errs, field.Required(rc, ""))
	}
	errs = append(errs, validateQualifiedName(ev.ReportingController, rc)...)
	if ev.ReportingInstance == "" {
		errs = append(errs, field.Required(field.NewPath("reportingInstance"), ""))
	}
	if len(ev.ReportingInstance) > reportingInstanceLengthLimit {
		errs = append(errs, field.Invalid(field.NewPath("reportingInstance"), "", fmt.Sprintf("can have at most %v characters", reportingInstanceLengthLimit)))
	}
	if ev.Action == "" {
		errs = append(errs, field.Required(field.NewPath("action"), ""))
	}
	if len(ev.Action) > actionLengthLimit {
		errs = append(errs, field.Invalid(field.NewPath("action"), "", fmt.Sprintf("can have at most %v characters", actionLengthLimit)))
	}
	if ev.Reason == "" {
		errs = append(errs, field.Required(field.NewPath("reason"), ""))
	}
	if len(ev.Reason) > reasonLengthLimit {
		errs = append(errs, field.Invalid(field.NewPath("reason"), "", fmt.Sprintf("can have at most %v characters", reasonLengthLimit)))
	}
	if len(ev.Message) > noteLengthLimit {
		errs = append(errs, field.Invalid(field.NewPath("message"), "", fmt.Sprintf("can have at most %v characters", noteLengthLimit)))
	}
	return errs
}
