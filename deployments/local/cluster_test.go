package local

import (
	"testing"
	"time"
)

func TestPrintedStatReadsTheWritesOwnStat(t *testing.T) {
	out := `WATCHER::

WatchedEvent state:SyncConnected type:None path:null
cZxid = 0x100000002
ctime = Tue Dec 01 02:20:11 UTC 2026
mZxid = 0x10000002e
mtime = Tue Dec 01 02:28:49 UTC 2026
pZxid = 0x100000002
cversion = 0
dataVersion = 7
`
	zxid, at, ok := printedStat(out)
	if !ok || zxid != 0x10000002e || !at.Equal(time.Date(2026, 12, 1, 2, 28, 49, 0, time.UTC)) {
		t.Fatalf("printedStat = %#x %s %v", zxid, at, ok)
	}
	if _, _, ok := printedStat("Node does not exist: /active_color\n"); ok {
		t.Fatal("a stat was read from an error")
	}
}
