package gateway

import (
	"fmt"
	"testing"
	"time"

	"github.com/switchyard/switchyard/registry"
)

func inst(id, service string, port int, st registry.Status) registry.Instance {
	return registry.Instance{ID: id, Service: service, Color: "blue", Address: "127.0.0.1", Port: port, Status: st}
}

func snapOf(index uint64, insts ...registry.Instance) registry.Snapshot {
	return registry.Snapshot{Index: index, Ready: true, Instances: insts}
}

func ids(p *Pool) []string {
	var out []string
	for _, e := range p.Endpoints() {
		out = append(out, e.Instance().ID)
	}
	return out
}

func TestTableLookup(t *testing.T) {
	routes := []Route{{Prefix: "/", Service: "web"}, {Prefix: "/api", Service: "api"}, {Prefix: "/api/v2", Service: "api2"}, {Prefix: "/static", Service: "web"}}
	snaps := map[string]registry.Snapshot{
		"web":  snapOf(7, inst("w1", "web", 1, registry.StatusUp)),
		"api":  snapOf(8, inst("a1", "api", 2, registry.StatusUp)),
		"api2": snapOf(9, inst("v1", "api2", 3, registry.StatusUp)),
	}
	table := NewTable(routes, snaps)
	tests := []struct {
		desc    string
		path    string
		service string
	}{
		{desc: "root goes to the root route", path: "/", service: "web"},
		{desc: "unknown path falls back to root", path: "/other/x", service: "web"},
		{desc: "exact prefix", path: "/api", service: "api"},
		{desc: "below a prefix", path: "/api/users/1", service: "api"},
		{desc: "longest prefix wins", path: "/api/v2/users", service: "api2"},
		{desc: "exact longest prefix", path: "/api/v2", service: "api2"},
		{desc: "prefix matches whole segments only", path: "/apix", service: "web"},
		{desc: "sibling of the longest prefix", path: "/api/v3", service: "api"},
		{desc: "two routes may share a service", path: "/static/app.js", service: "web"},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			p, ok := table.Lookup(tt.path)
			if !ok {
				t.Fatalf("Lookup(%q) found no route", tt.path)
			}
			if p.Service() != tt.service {
				t.Fatalf("Lookup(%q) = %q, want %q", tt.path, p.Service(), tt.service)
			}
		})
	}
	t.Run("no route matches without a root route", func(t *testing.T) {
		table := NewTable([]Route{{Prefix: "/api", Service: "api"}}, snaps)
		if p, ok := table.Lookup("/web"); ok {
			t.Fatalf("Lookup(/web) = %q, want no route", p.Service())
		}
	})
}

func TestTablePools(t *testing.T) {
	tests := []struct {
		desc    string
		snaps   map[string]registry.Snapshot
		wantIDs []string
		applied map[string]uint64
	}{
		{
			desc: "only UP instances are routed",
			snaps: map[string]registry.Snapshot{"hello": snapOf(5,
				inst("up1", "hello", 1, registry.StatusUp),
				inst("down", "hello", 2, registry.StatusDown),
				inst("starting", "hello", 3, registry.StatusStarting),
				inst("oos", "hello", 4, registry.StatusOutOfService),
				inst("up2", "hello", 5, registry.StatusUp),
			)},
			wantIDs: []string{"up1", "up2"},
			applied: map[string]uint64{"hello": 5},
		},
		{
			desc: "no UP instance leaves the pool empty",
			snaps: map[string]registry.Snapshot{"hello": snapOf(6,
				inst("down", "hello", 2, registry.StatusDown),
				inst("oos", "hello", 4, registry.StatusOutOfService),
			)},
			applied: map[string]uint64{"hello": 6},
		},
		{
			desc:    "service without a snapshot is empty and not applied",
			snaps:   nil,
			applied: map[string]uint64{},
		},
		{
			desc: "instances of another service are ignored",
			snaps: map[string]registry.Snapshot{"hello": snapOf(7,
				inst("other", "bye", 1, registry.StatusUp),
			)},
			applied: map[string]uint64{"hello": 7},
		},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			table := NewTable([]Route{{Prefix: "/", Service: "hello"}}, tt.snaps)
			p, ok := table.Lookup("/")
			if !ok {
				t.Fatal("no pool for /")
			}
			if got := ids(p); fmt.Sprint(got) != fmt.Sprint(tt.wantIDs) {
				t.Fatalf("endpoints = %v, want %v", got, tt.wantIDs)
			}
			if p.Len() == 0 && p.Next() != nil {
				t.Fatal("Next on an empty pool returned an endpoint")
			}
			if got := table.Applied(); fmt.Sprint(got) != fmt.Sprint(tt.applied) {
				t.Fatalf("Applied() = %v, want %v", got, tt.applied)
			}
		})
	}
}

func TestPoolPick(t *testing.T) {
	three := snapOf(1,
		inst("a", "s", 1, registry.StatusUp),
		inst("b", "s", 2, registry.StatusUp),
		inst("c", "s", 3, registry.StatusUp),
	)
	pool := func() *Pool {
		p, _ := NewTable([]Route{{Prefix: "/", Service: "s"}}, map[string]registry.Snapshot{"s": three}).Lookup("/")
		return p
	}

	t.Run("round-robin spreads evenly", func(t *testing.T) {
		p := pool()
		counts := map[string]int{}
		for range 300 {
			counts[p.Next().Instance().ID]++
		}
		for _, id := range []string{"a", "b", "c"} {
			if counts[id] != 100 {
				t.Fatalf("counts = %v, want 100 each", counts)
			}
		}
	})
	t.Run("endpoints already tried are passed over", func(t *testing.T) {
		p := pool()
		for range 10 {
			e := p.pick([]string{"127.0.0.1:1", "127.0.0.1:3"})
			if e == nil || e.Instance().ID != "b" {
				t.Fatalf("pick = %v, want b", e)
			}
		}
		if e := p.pick([]string{"127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"}); e != nil {
			t.Fatalf("pick with everything tried = %v, want nil", e.Instance().ID)
		}
	})
	t.Run("an endpoint that refused a connection is passed over", func(t *testing.T) {
		p := pool()
		p.endpoint("127.0.0.1:2").markDown(time.Now())
		for range 20 {
			if id := p.Next().Instance().ID; id == "b" {
				t.Fatal("picked b while it is marked down")
			}
		}
	})
	t.Run("a down endpoint is still used when it is the only one left", func(t *testing.T) {
		p := pool()
		p.endpoint("127.0.0.1:2").markDown(time.Now())
		e := p.pick([]string{"127.0.0.1:1", "127.0.0.1:3"})
		if e == nil || e.Instance().ID != "b" {
			t.Fatalf("pick = %v, want b as the last resort", e)
		}
	})
	t.Run("a down endpoint comes back after the pause", func(t *testing.T) {
		p := pool()
		p.endpoint("127.0.0.1:2").markDown(time.Now().Add(-passiveDown - time.Millisecond))
		seen := map[string]bool{}
		for range 3 {
			seen[p.Next().Instance().ID] = true
		}
		if !seen["b"] {
			t.Fatalf("saw %v, want b back in rotation", seen)
		}
	})
}

func TestTableWith(t *testing.T) {
	routes := []Route{{Prefix: "/", Service: "web"}, {Prefix: "/api", Service: "api"}}
	old := NewTable(routes, map[string]registry.Snapshot{
		"web": snapOf(1, inst("w1", "web", 1, registry.StatusUp), inst("w2", "web", 2, registry.StatusUp)),
		"api": snapOf(2, inst("a1", "api", 3, registry.StatusUp)),
	})
	oldWeb, _ := old.Lookup("/")
	oldWeb.endpoint("127.0.0.1:1").markDown(time.Now())

	next := old.with("web", snapOf(3,
		inst("w1", "web", 1, registry.StatusUp),
		inst("w2", "web", 2, registry.StatusDown),
		inst("w3", "web", 4, registry.StatusUp),
	))

	t.Run("old table is unchanged", func(t *testing.T) {
		if got := ids(oldWeb); fmt.Sprint(got) != "[w1 w2]" {
			t.Fatalf("old web endpoints = %v", got)
		}
	})
	t.Run("changed service is rebuilt", func(t *testing.T) {
		web, _ := next.Lookup("/")
		if got := ids(web); fmt.Sprint(got) != "[w1 w3]" {
			t.Fatalf("web endpoints = %v, want [w1 w3]", got)
		}
		if web.Index() != 3 {
			t.Fatalf("web index = %d, want 3", web.Index())
		}
	})
	t.Run("passive health survives the rebuild", func(t *testing.T) {
		web, _ := next.Lookup("/")
		if web.endpoint("127.0.0.1:1").downUntil.Load() == 0 {
			t.Fatal("w1 lost its down mark in the new table")
		}
	})
	t.Run("other services are shared", func(t *testing.T) {
		a, _ := old.Lookup("/api")
		b, _ := next.Lookup("/api")
		if a != b {
			t.Fatal("api pool was rebuilt although it did not change")
		}
	})
	t.Run("applied indexes follow", func(t *testing.T) {
		if got := fmt.Sprint(next.Applied()); got != "map[api:2 web:3]" {
			t.Fatalf("Applied() = %s", got)
		}
	})
}

// TestPoolCarriesEndpointsOver checks the rebuild of one service's pool,
// the gateway's work per registry change: an unchanged instance keeps its
// endpoint (and so its passive health and its place), whatever the order
// the registry lists instances in.
func TestPoolCarriesEndpointsOver(t *testing.T) {
	up, out := registry.StatusUp, registry.StatusOutOfService
	base := []registry.Instance{inst("a", "web", 1, up), inst("b", "web", 2, up), inst("c", "web", 3, out), inst("d", "web", 4, up)}
	for _, tc := range []struct {
		desc  string
		next  []registry.Instance
		want  string // the endpoints' ids
		kept  string // the ids whose endpoint is carried over
		share bool   // the whole endpoint list is the old one
	}{
		{desc: "an unchanged snapshot shares the old endpoint list", next: base, want: "[a b d]", kept: "[a b d]", share: true},
		{desc: "an instance coming UP gets a new endpoint, the others are kept",
			next: []registry.Instance{inst("a", "web", 1, up), inst("b", "web", 2, up), inst("c", "web", 3, up), inst("d", "web", 4, up)},
			want: "[a b c d]", kept: "[a b d]"},
		{desc: "an instance going OUT leaves, the others are kept",
			next: []registry.Instance{inst("a", "web", 1, up), inst("b", "web", 2, out), inst("c", "web", 3, out), inst("d", "web", 4, up)},
			want: "[a d]", kept: "[a d]"},
		{desc: "the last instance leaving keeps a prefix of the old list",
			next: []registry.Instance{inst("a", "web", 1, up), inst("b", "web", 2, up), inst("c", "web", 3, out), inst("d", "web", 4, out)},
			want: "[a b]", kept: "[a b]"},
		{desc: "an instance at a new address gets a new endpoint",
			next: []registry.Instance{inst("a", "web", 1, up), inst("b", "web", 9, up), inst("c", "web", 3, out), inst("d", "web", 4, up)},
			want: "[a b d]", kept: "[a d]"},
		{desc: "a registry that does not list by id still finds the old endpoints",
			next: []registry.Instance{inst("d", "web", 4, up), inst("b", "web", 2, up), inst("a", "web", 1, up)},
			want: "[d b a]", kept: "[d b a]"},
		{desc: "no UP instance is an empty pool", next: []registry.Instance{inst("a", "web", 1, out)}, want: "[]", kept: "[]"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			prev := newPool("web", snapOf(1, base...), true, nil, false)
			p := newPool("web", snapOf(2, tc.next...), true, prev, false)
			old := map[string]*Endpoint{}
			for _, e := range prev.eps {
				old[e.inst.ID] = e
			}
			got, kept := []string{}, []string{}
			for _, e := range p.eps {
				got = append(got, e.inst.ID)
				if old[e.inst.ID] == e {
					kept = append(kept, e.inst.ID)
				}
			}
			if fmt.Sprint(got) != tc.want {
				t.Errorf("endpoints = %v, want %s", got, tc.want)
			}
			if fmt.Sprint(kept) != tc.kept {
				t.Errorf("carried over = %v, want %s", kept, tc.kept)
			}
			if shared := len(p.eps) > 0 && &p.eps[0] == &prev.eps[0] && len(p.eps) == len(prev.eps); shared != tc.share {
				t.Errorf("list shared = %v, want %v", shared, tc.share)
			}
			if p.Index() != 2 {
				t.Errorf("index = %d, want 2", p.Index())
			}
		})
	}
}
