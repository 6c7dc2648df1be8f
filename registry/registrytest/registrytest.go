// Package registrytest holds checks every registry backend must pass, for
// the backends' own tests to run against a real registry.
package registrytest

import (
	"context"
	"testing"
	"time"

	"github.com/switchyard/switchyard/registry"
)

// GatewayReporter is the part of a backend the gateway-report checks use.
type GatewayReporter interface {
	ReportGateway(ctx context.Context, r registry.GatewayReport) error
	registry.GatewayWatcher
}

// AReportWakesABlockingQuery checks what a controller waiting for gateways
// relies on: a blocking query on the reports holds until a report lands
// (and through meanwhile, when given, which must not wake it), then
// answers the new report at a newer index; with no report since, it waits
// out its wait and answers the same index.
func AReportWakesABlockingQuery(t *testing.T, b GatewayReporter, meanwhile func()) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := b.ReportGateway(ctx, registry.GatewayReport{ID: "gw-1", Applied: map[string]uint64{"hello": 1}}); err != nil {
		t.Fatal(err)
	}
	_, idx, err := b.WatchGateways(ctx, 0, 0)
	if err != nil || idx == 0 {
		t.Fatalf("first list: index %d, %v; want an index", idx, err)
	}
	type answer struct {
		gws []registry.GatewayReport
		idx uint64
		err error
	}
	got := make(chan answer, 1)
	go func() {
		gws, i, err := b.WatchGateways(ctx, idx, 30*time.Second)
		got <- answer{gws, i, err}
	}()
	hold := func(what string) {
		t.Helper()
		select {
		case a := <-got:
			t.Fatalf("the blocking query returned %s: %+v", what, a)
		case <-time.After(300 * time.Millisecond):
		}
	}
	hold("before any report")
	if meanwhile != nil {
		meanwhile()
		hold("on a change that is not a report")
	}
	if err := b.ReportGateway(ctx, registry.GatewayReport{ID: "gw-1", Applied: map[string]uint64{"hello": 2}}); err != nil {
		t.Fatal(err)
	}
	var a answer
	select {
	case a = <-got:
	case <-time.After(10 * time.Second):
		t.Fatal("the blocking query did not return after a report")
	}
	if a.err != nil || len(a.gws) != 1 || a.gws[0].Applied["hello"] != 2 || a.idx <= idx {
		t.Fatalf("after a report: %+v; want gw-1's new report at an index past %d", a, idx)
	}
	gws, again, err := b.WatchGateways(ctx, a.idx, 200*time.Millisecond)
	if err != nil || again != a.idx || len(gws) != 1 {
		t.Fatalf("a wait with no report answered %v, index %d, %v; want the same report at index %d", gws, again, err, a.idx)
	}
}
