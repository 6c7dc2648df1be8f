package registry

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
)

// View is every service's instances at Index, as a watch of all services
// follows them. A View, its maps and its slices are never changed once
// made: the next view of the same watch shares each service that did not
// change, so that following a fleet costs what changed, not the fleet.
type View struct {
	Index uint64
	// Ready is Snapshot.Ready.
	Ready bool
	// Services holds each service's instances, sorted by id; a service
	// without instances is absent.
	Services map[string][]Instance
	// Changed names the services whose instances may differ from those of
	// the view before it on the same watch; nil means any may (a watch's
	// first view, or a registry that answers whole views).
	Changed map[string]bool
	// epoch names the registry that gave the view (see EpochHeader); ""
	// for a registry that cannot answer the changes since it.
	epoch string
}

// ViewOf groups a snapshot of all services by service: a view in which
// any service may have changed.
func ViewOf(s Snapshot) *View {
	v := &View{Index: s.Index, Ready: s.Ready, Services: map[string][]Instance{}}
	for _, inst := range s.Instances {
		v.Services[inst.Service] = append(v.Services[inst.Service], inst)
	}
	for _, insts := range v.Services {
		slices.SortFunc(insts, byID)
	}
	return v
}

func byID(a, b Instance) int { return strings.Compare(a.ID, b.ID) }

// Snapshot is the view as one list of every instance, sorted by id, as
// the registry lists all services; the list is the caller's own.
func (v *View) Snapshot() Snapshot {
	n := 0
	for _, insts := range v.Services {
		n += len(insts)
	}
	out := make([]Instance, 0, n)
	for _, insts := range v.Services {
		out = append(out, insts...)
	}
	slices.SortFunc(out, byID)
	return Snapshot{Index: v.Index, Ready: v.Ready, Instances: out}
}

// Viewer is a Lister whose view of all services can be asked as the
// changes since a view it gave: the built-in registry's client.
type Viewer interface {
	Lister
	// View answers the view of all services, from the changes since prev
	// when the registry can give them (prev nil: the whole view). With
	// waitIndex > 0 it first blocks as Instances does.
	View(ctx context.Context, prev *View, waitIndex uint64, wait time.Duration) (*View, error)
}

// WatchView is Watch of all services for a Viewer: after the first view,
// the registry sends what changed, and each view names the services that
// changed since the one before it on this watch (views a slow reader
// never got included).
func WatchView(ctx context.Context, v Viewer, o WatchOptions) <-chan *View {
	o = o.withDefaults()
	return follow(ctx, o, "", func(last *View, index uint64) (*View, error) {
		return v.View(ctx, last, index, o.Wait)
	})
}

func (v *View) at() (uint64, bool, string) { return v.Index, v.Ready, v.epoch }
func (v *View) after(dropped *View) *View  { return v.since(dropped) }

func (v *View) String() string {
	if v == nil {
		return "no view"
	}
	return fmt.Sprintf("index %d of %q", v.Index, v.epoch)
}

// since is v as the view after older on a watch whose reader never got
// the views in between: the services either changed. v itself, the base
// of the next answer, is left as it is.
func (v *View) since(older *View) *View {
	if v.Changed == nil {
		return v
	}
	joined := *v
	joined.Changed = nil
	if older.Changed != nil {
		joined.Changed = maps.Clone(older.Changed)
		maps.Copy(joined.Changed, v.Changed)
	}
	return &joined
}
