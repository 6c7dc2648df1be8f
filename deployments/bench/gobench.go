package bench

import (
	"bufio"
	"context"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
)

// GoBench is one line of `go test -bench` output.
type GoBench struct {
	Name        string
	NsPerOp     float64
	BytesPerOp  int64
	AllocsPerOp int64
}

// goBench runs the gateway's routing-table benchmark for 10,000 instances
// (gateway/bench_test.go) so its figure lands in the same table.
func (b *bencher) goBench(ctx context.Context) error {
	cmd := exec.CommandContext(ctx, "go", "test", "-run", "^$", "-bench", "^BenchmarkTableBuild10000$", "-benchmem", "-count", "1", "./gateway/")
	cmd.Dir = b.root
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("go test -bench: %w: %s", err, out)
	}
	b.report.TableBuild = parseGoBench(string(out))
	if len(b.report.TableBuild) == 0 {
		return fmt.Errorf("no benchmark lines in:\n%s", out)
	}
	for _, l := range b.report.TableBuild {
		b.logf("%s: %.2f ms/op, %d B/op, %d allocs/op", l.Name, l.NsPerOp/1e6, l.BytesPerOp, l.AllocsPerOp)
	}
	return nil
}

// parseGoBench reads the benchmark lines of `go test -bench -benchmem`.
func parseGoBench(out string) []GoBench {
	var res []GoBench
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 4 || !strings.HasPrefix(f[0], "Benchmark") {
			continue
		}
		g := GoBench{Name: f[0]}
		if i := strings.LastIndexByte(g.Name, '-'); i > 0 {
			if _, err := strconv.Atoi(g.Name[i+1:]); err == nil {
				g.Name = g.Name[:i] // drop the GOMAXPROCS suffix
			}
		}
		ok := false
		for i := 2; i+1 < len(f); i += 2 {
			switch f[i+1] {
			case "ns/op":
				g.NsPerOp, _ = strconv.ParseFloat(f[i], 64)
				ok = true
			case "B/op":
				g.BytesPerOp, _ = strconv.ParseInt(f[i], 10, 64)
			case "allocs/op":
				g.AllocsPerOp, _ = strconv.ParseInt(f[i], 10, 64)
			}
		}
		if ok {
			res = append(res, g)
		}
	}
	return res
}
