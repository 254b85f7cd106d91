package apiserver

import (
	"fmt"
	"net/http"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	metav1validation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/duration"
)

// Server-side printing. `kubectl get` asks for
// application/json;as=Table;v=v1;g=meta.k8s.io and prints the columns the
// server chooses, hiding priority>0 columns unless -o wide. Each kind's
// registry.TableConvertor gives columns and cells; kinds without one get NAME
// and AGE. Rows carry the object's metadata (PartialObjectMetadata) unless
// includeObject asks for the whole object or none, which is what kubectl needs
// for -A and --show-labels.

var objectMetaDocs = metav1.ObjectMeta{}.SwaggerDoc()

// defaultColumns are NAME and AGE, as kube-apiserver prints kinds it has no
// printer for (and as kubectl prints non-Table responses).
var defaultColumns = []metav1.TableColumnDefinition{
	{Name: "Name", Type: "string", Format: "name", Description: objectMetaDocs["name"]},
	{Name: "Age", Type: "string", Description: objectMetaDocs["creationTimestamp"]},
}

// tableOptions reads includeObject from the query.
func tableOptions(r *http.Request) (metav1.TableOptions, error) {
	opts := metav1.TableOptions{IncludeObject: metav1.IncludeObjectPolicy(r.URL.Query().Get("includeObject"))}
	if errs := metav1validation.ValidateTableOptions(&opts); len(errs) > 0 {
		return opts, apierrors.NewBadRequest(errs.ToAggregate().Error())
	}
	if opts.IncludeObject == "" {
		opts.IncludeObject = metav1.IncludeMetadata
	}
	return opts, nil
}

// toTable converts one object or a list of res into a Table. noHeaders drops
// the column definitions (watch events after the first).
func (s *Server) toTable(res *resource, obj runtime.Object, isList bool, opts metav1.TableOptions, noHeaders bool) (*metav1.Table, error) {
	items := []runtime.Object{obj}
	table := &metav1.Table{}
	if isList {
		var err error
		if items, err = meta.ExtractList(obj); err != nil {
			return nil, err
		}
		if lm, err := meta.ListAccessor(obj); err == nil {
			table.ResourceVersion = lm.GetResourceVersion()
			table.Continue = lm.GetContinue()
			table.RemainingItemCount = lm.GetRemainingItemCount()
		}
	} else if m, err := meta.Accessor(obj); err == nil {
		table.ResourceVersion = m.GetResourceVersion()
	}

	columns, cells := defaultColumns, defaultCells
	if res.kind.Table != nil {
		columns, cells = res.kind.Table.Columns, res.kind.Table.Cells
	}
	if !noHeaders {
		table.ColumnDefinitions = columns
	}
	table.Rows = make([]metav1.TableRow, 0, len(items))
	for _, item := range items {
		row := metav1.TableRow{Cells: cells(item)}
		if len(row.Cells) != len(columns) {
			return nil, fmt.Errorf("apiserver: table of %s: %d cells for %d columns", res.gvr.Resource, len(row.Cells), len(columns))
		}
		switch opts.IncludeObject {
		case metav1.IncludeObject:
			ensureTypeMeta(item, res.gvk)
			row.Object.Object = item
		case metav1.IncludeMetadata:
			m, err := meta.Accessor(item)
			if err != nil {
				return nil, err
			}
			p := meta.AsPartialObjectMetadata(m)
			p.SetGroupVersionKind(metav1.SchemeGroupVersion.WithKind(asPartial))
			row.Object.Object = p
		}
		table.Rows = append(table.Rows, row)
	}
	return table, nil
}

func defaultCells(obj runtime.Object) []interface{} {
	m, err := meta.Accessor(obj)
	if err != nil {
		return []interface{}{"", "<unknown>"}
	}
	return []interface{}{m.GetName(), translateTimestampSince(m.GetCreationTimestamp())}
}

// translateTimestampSince prints an age the way kubectl does ("5m", "3d").
func translateTimestampSince(t metav1.Time) string {
	if t.IsZero() {
		return "<unknown>"
	}
	return duration.HumanDuration(time.Since(t.Time))
}
