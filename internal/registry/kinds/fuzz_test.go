package kinds_test

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/svcnet/svcnet/internal/registry"
	"github.com/svcnet/svcnet/internal/registry/kinds"
)

// FuzzStrategies decodes arbitrary JSON into every kind and runs it through
// the create, update and status paths, the table and the field set: none of
// them may panic on whatever a client manages to send.
func FuzzStrategies(f *testing.F) {
	for _, seed := range []string{
		`{}`,
		`{"metadata":{"name":"a","namespace":"default"}}`,
		`{"spec":{"containers":[{"name":"a","image":"b","ports":[{"containerPort":80}]}],"initContainers":[{"name":"i","restartPolicy":"Always"}]},"status":{"podIPs":[{"ip":"10.0.0.1"},{"ip":"::1"}],"initContainerStatuses":[{"name":"i"}],"containerStatuses":[{"state":{"terminated":{"reason":"Completed"}}}]}}`,
		`{"spec":{"selector":{"matchExpressions":[{"key":"a","operator":"Bogus"}]},"template":{"spec":{"containers":[{}]}},"strategy":{"rollingUpdate":{"maxSurge":"x%"}}}}`,
		`{"addressType":"IPv4","endpoints":[{"addresses":["1.2.3"]},{}],"ports":[{},{"name":"a"}]}`,
		`{"subsets":[{"addresses":[{"ip":""}],"ports":[{},{}]}]}`,
		`{"spec":{"podCIDRs":["x","y","z"],"taints":[{},{}]},"status":{"addresses":[{},{}],"conditions":[{"type":"Ready"}]}}`,
		`{"series":{"count":2},"eventTime":"2026-01-01T00:00:00.000000Z","involvedObject":{}}`,
	} {
		f.Add([]byte(seed))
	}
	ctx := context.Background()
	all := kinds.All(nil)
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, k := range all {
			obj := k.New()
			if json.Unmarshal(data, obj) != nil {
				continue
			}
			old := obj.DeepCopyObject()
			k.Strategy.PrepareForCreate(ctx, obj)
			k.Strategy.Default(obj)
			k.Strategy.Validate(ctx, obj)

			upd := obj.DeepCopyObject()
			k.Strategy.PrepareForUpdate(ctx, upd, old)
			k.Strategy.Default(upd)
			k.Strategy.ValidateUpdate(ctx, upd, old)
			if ss, ok := k.Strategy.(registry.StatusStrategy); ok {
				st := old.DeepCopyObject()
				ss.PrepareForStatusUpdate(ctx, st, obj)
				ss.ValidateStatusUpdate(ctx, st, obj)
			}
			if k.Table != nil {
				if cells := k.Table.Cells(obj); len(cells) != len(k.Table.Columns) {
					t.Fatalf("%s: %d cells for %d columns", k.Resource, len(cells), len(k.Table.Columns))
				}
			}
			if k.Fields != nil {
				k.Fields(obj)
			}
			if k.Scale != nil {
				k.Scale.Get(obj)
			}
		}
	})
}
