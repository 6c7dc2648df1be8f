package gateway

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"

	"github.com/switchyard/switchyard/registry"
)

// by is inst labelled with the switch that last changed its status.
func by(in registry.Instance, sw int64) registry.Instance {
	in.Switch = sw
	return in
}

// appliedLine is the last "routing table applied" entry, nil when none.
func appliedLine(h *logtest.Hook) *logrus.Entry {
	entries := h.AllEntries()
	for i := len(entries) - 1; i >= 0; i-- {
		if strings.HasPrefix(entries[i].Message, "routing table applied") {
			return entries[i]
		}
	}
	return nil
}

// up, out and down are instances of the service hello.
func up(id string, port int) registry.Instance { return inst(id, "hello", port, registry.StatusUp) }
func out(id string, port int) registry.Instance {
	return inst(id, "hello", port, registry.StatusOutOfService)
}
func down(id string, port int) registry.Instance { return inst(id, "hello", port, registry.StatusDown) }

func TestRoutingTableLinesNameTheSwitchThatMovedInstances(t *testing.T) {
	tests := []struct {
		desc    string
		standby bool // the gateway serves the preview, so its pools keep OUT_OF_SERVICE instances
		before  []registry.Instance
		after   []registry.Instance
		want    int64 // 0: the line names no switch
	}{
		{
			desc:   "an instance a switch put UP names it",
			before: []registry.Instance{up("a", 1), out("b", 2)},
			after:  []registry.Instance{up("a", 1), by(up("b", 2), 7)},
			want:   7,
		},
		{
			desc:   "an instance a switch took out names it",
			before: []registry.Instance{up("a", 1), up("b", 2)},
			after:  []registry.Instance{by(out("a", 1), 7), up("b", 2)},
			want:   7,
		},
		{
			desc:   "of the instances moved, the newest switch is named",
			before: []registry.Instance{up("a", 1), out("b", 2)},
			after:  []registry.Instance{by(out("a", 1), 8), by(up("b", 2), 9)},
			want:   9,
		},
		{
			desc:   "an instance that stayed where it was lends its switch to no later change",
			before: []registry.Instance{by(up("a", 1), 12), up("b", 2)},
			after:  []registry.Instance{by(up("a", 1), 12), down("b", 2)},
			want:   0,
		},
		{
			desc:   "a change no switch made names none",
			before: []registry.Instance{up("a", 1), out("b", 2)},
			after:  []registry.Instance{up("a", 1), up("b", 2)},
			want:   0,
		},
		{
			desc:   "an instance that left the registry names nothing",
			before: []registry.Instance{by(up("a", 1), 4), up("b", 2)},
			after:  []registry.Instance{up("b", 2)},
			want:   0,
		},
		{
			desc:    "with the preview, an instance a switch moved into the standby set names it",
			standby: true,
			before:  []registry.Instance{up("a", 1), down("b", 2)},
			after:   []registry.Instance{up("a", 1), by(out("b", 2), 5)},
			want:    5,
		},
		{
			desc:    "with the preview, a move between UP and standby names the switch",
			standby: true,
			before:  []registry.Instance{up("a", 1), out("b", 2)},
			after:   []registry.Instance{by(out("a", 1), 6), by(up("b", 2), 6)},
			want:    6,
		},
	}
	for _, tt := range tests {
		for _, path := range []string{"the watch of all services", "a watch of the service"} {
			t.Run(tt.desc+" ("+path+")", func(t *testing.T) {
				log, hook := quietLog()
				cfg := Config{Routes: []Route{{Prefix: "/", Service: "hello"}}, Source: newFakeSource(), Log: log}
				if tt.standby {
					cfg.PreviewListen = "127.0.0.1:0"
				}
				g, err := New(cfg)
				if err != nil {
					t.Fatal(err)
				}
				apply := applyVia(g, path)
				apply(10, tt.before)
				hook.Reset()
				apply(11, tt.after)
				line := appliedLine(hook)
				if line == nil {
					t.Fatalf("no routing table line; logged %d entries", len(hook.AllEntries()))
				}
				got, named := line.Data["switch"]
				switch {
				case tt.want == 0 && named:
					t.Fatalf("line names switch %v, want none: %v", got, line.Data)
				case tt.want != 0 && got != tt.want:
					t.Fatalf("line names switch %v, want %d: %v", got, tt.want, line.Data)
				}
			})
		}
	}
}

func TestAServicesFirstRoutingTableNamesNoSwitch(t *testing.T) {
	log, hook := quietLog()
	g, err := New(Config{Routes: []Route{{Prefix: "/", Service: "hello"}}, Source: newFakeSource(), Log: log})
	if err != nil {
		t.Fatal(err)
	}
	// A gateway that starts after a switch learns the state; it does not
	// see the switch move anything.
	g.applyAll(context.Background(), registry.ViewOf(snapOf(10, by(inst("a", "hello", 1, registry.StatusUp), 7))))
	line := appliedLine(hook)
	if line == nil {
		t.Fatal("no routing table line")
	}
	if sw, ok := line.Data["switch"]; ok {
		t.Fatalf("the first table names switch %v", sw)
	}
}

func TestASummaryOfManyServicesNamesTheNewestSwitch(t *testing.T) {
	log, hook := quietLog()
	var routes []Route
	var before, after []registry.Instance
	for i := range 12 {
		svc := fmt.Sprintf("svc-%02d", i)
		routes = append(routes, Route{Prefix: "/" + svc, Service: svc})
		before = append(before, inst(svc+"-a", svc, 1000+i, registry.StatusOutOfService))
		after = append(after, by(inst(svc+"-a", svc, 1000+i, registry.StatusUp), int64(20+i%3)))
	}
	g, err := New(Config{Routes: routes, Source: newFakeSource(), Log: log})
	if err != nil {
		t.Fatal(err)
	}
	g.applyAll(context.Background(), registry.ViewOf(snapOf(10, before...)))
	hook.Reset()
	g.applyAll(context.Background(), registry.ViewOf(snapOf(11, after...)))
	line := appliedLine(hook)
	if line == nil || line.Data["services"] != 12 {
		t.Fatalf("summary line = %v, want one for 12 services", line)
	}
	if line.Data["switch"] != int64(22) {
		t.Fatalf("summary names switch %v, want 22, the newest: %v", line.Data["switch"], line.Data)
	}
}

// Fast reports follow a change of a service's UP instances, which is when
// a color takes new traffic, and nothing else: an index, a DOWN instance
// joining or the standby list alone do not start them.
func TestOnlyAChangeOfTheUPInstancesStartsFastReports(t *testing.T) {
	tests := []struct {
		desc  string
		after []registry.Instance
		fast  bool
	}{
		{"an index alone", []registry.Instance{up("a", 1), out("b", 2)}, false},
		{"an OUT_OF_SERVICE instance that went DOWN", []registry.Instance{up("a", 1), down("b", 2)}, false},
		{"a new instance registering OUT_OF_SERVICE", []registry.Instance{up("a", 1), out("b", 2), out("c", 3)}, false},
		{"an instance brought UP", []registry.Instance{up("a", 1), up("b", 2)}, true},
		{"an instance taken out", []registry.Instance{out("a", 1), out("b", 2)}, true},
	}
	for _, tt := range tests {
		for _, path := range []string{"the watch of all services", "a watch of the service"} {
			t.Run(tt.desc+" ("+path+")", func(t *testing.T) {
				log, _ := quietLog()
				// The preview keeps the standby list, so a change to it is a
				// table change, yet no new traffic.
				g, err := New(Config{Routes: []Route{{Prefix: "/", Service: "hello"}}, Source: newFakeSource(), Log: log, PreviewListen: "127.0.0.1:0"})
				if err != nil {
					t.Fatal(err)
				}
				apply := applyVia(g, path)
				apply(10, []registry.Instance{up("a", 1), out("b", 2)})
				g.routed.Store(0)
				apply(11, tt.after)
				if fast := g.routed.Load() != 0; fast != tt.fast {
					t.Fatalf("fast reports started = %v, want %v", fast, tt.fast)
				}
			})
		}
	}
}

// applyVia applies snapshots of "hello" to g the way path names: "a
// watch of the service", else the watch of all services.
func applyVia(g *Gateway, path string) func(index uint64, insts []registry.Instance) {
	return func(index uint64, insts []registry.Instance) {
		if path == "a watch of the service" {
			g.apply("hello", snapOf(index, insts...))
		} else {
			g.applyAll(context.Background(), registry.ViewOf(snapOf(index, insts...)))
		}
	}
}
