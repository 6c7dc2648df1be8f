package sdk

import (
	"testing"

	"github.com/switchyard/switchyard/registry"
)

func TestWatchers(t *testing.T) {
	t.Run("a reader that falls behind gets the newest status, not a backlog", func(t *testing.T) {
		w := watchers{last: registry.StatusOutOfService}
		ch := make(chan registry.Status, 1)
		w.add(ch)
		w.publish(registry.StatusUp)
		w.publish(registry.StatusDown)
		w.publish(registry.StatusUp)
		if got := <-ch; got != registry.StatusUp {
			t.Fatalf("first read %s, want the newest, UP", got)
		}
		select {
		case got := <-ch:
			t.Fatalf("a second value %s was queued", got)
		default:
		}
	})
	t.Run("a repeated status is not published again", func(t *testing.T) {
		w := watchers{last: registry.StatusOutOfService}
		ch := make(chan registry.Status, 1)
		w.add(ch)
		<-ch
		w.publish(registry.StatusOutOfService)
		select {
		case got := <-ch:
			t.Fatalf("the unchanged status %s was published", got)
		default:
		}
	})
	t.Run("a removed reader's channel closes after its last value", func(t *testing.T) {
		w := watchers{last: registry.StatusOutOfService}
		ch := make(chan registry.Status, 1)
		w.add(ch)
		<-ch
		w.publish(registry.StatusUp)
		w.remove(ch)
		w.publish(registry.StatusOutOfService) // must not panic on the closed channel
		if got, ok := <-ch; !ok || got != registry.StatusUp {
			t.Fatalf("read %s, %v; want UP published before the removal", got, ok)
		}
		if _, ok := <-ch; ok {
			t.Fatal("the channel did not close")
		}
	})
}
