package generic

import (
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/duration"
)

// Column returns a string column definition. priority 1 columns are shown
// only with `kubectl get -o wide`.
func Column(name, description string, priority int32) metav1.TableColumnDefinition {
	return metav1.TableColumnDefinition{Name: name, Type: "string", Description: description, Priority: priority}
}

// IntColumn returns an integer column definition (cells are int64).
func IntColumn(name, description string, priority int32) metav1.TableColumnDefinition {
	return metav1.TableColumnDefinition{Name: name, Type: "integer", Description: description, Priority: priority}
}

// NameColumn is the NAME column every kind starts with.
func NameColumn() metav1.TableColumnDefinition {
	c := Column("Name", metav1.ObjectMeta{}.SwaggerDoc()["name"], 0)
	c.Format = "name"
	return c
}

// AgeColumn is the AGE column.
func AgeColumn() metav1.TableColumnDefinition {
	return Column("Age", metav1.ObjectMeta{}.SwaggerDoc()["creationTimestamp"], 0)
}

// Age formats the time since t the way kubectl's AGE column does
// ("<unknown>" for a zero time).
func Age(t metav1.Time) string { return AgeAt(t.Time, time.Now()) }

// MicroAge is Age for a MicroTime.
func MicroAge(t metav1.MicroTime) string { return AgeAt(t.Time, time.Now()) }

// AgeAt formats now - t with duration.HumanDuration ("<unknown>" for a zero t).
func AgeAt(t, now time.Time) string {
	if t.IsZero() {
		return "<unknown>"
	}
	return duration.HumanDuration(now.Sub(t))
}

// ContainerCells returns the CONTAINERS and IMAGES cells: names and images
// joined by commas.
func ContainerCells(containers []corev1.Container) (names, images string) {
	n := make([]string, len(containers))
	im := make([]string, len(containers))
	for i, c := range containers {
		n[i], im[i] = c.Name, c.Image
	}
	return strings.Join(n, ","), strings.Join(im, ",")
}

// ListWithMore joins the first max items with commas and, when there are
// more (total counts them all), appends " + N more...". An empty list is
// empty.
func ListWithMore(items []string, total, max int) string {
	if len(items) > max {
		items = items[:max]
	}
	s := strings.Join(items, ",")
	if total > max {
		return fmt.Sprintf("%s + %d more...", s, total-max)
	}
	return s
}

// SelectorString renders a label selector as a selector string
// ("app=web,tier in (a,b)"); "" for nil or empty and "<invalid>" for one
// that does not convert. This is the form the Scale subresource reports.
func SelectorString(sel *metav1.LabelSelector) string {
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		return "<invalid>"
	}
	return s.String()
}

// FormatSelector is metav1.FormatLabelSelector: like SelectorString but
// "<none>" when empty, as printed in SELECTOR columns.
func FormatSelector(sel *metav1.LabelSelector) string { return metav1.FormatLabelSelector(sel) }
