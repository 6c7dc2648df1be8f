package bench

import (
	"os"
	"os/exec"
	"testing"
)

func TestOneProcessNginxConfigPassesNginxCheck(t *testing.T) {
	if _, err := os.Stat(nginxBin()); err != nil {
		t.Fatalf("nginx is missing (%v); deployments/install/nginx.sh installs it", err)
	}
	dir := t.TempDir()
	conf := nginxOneProcessConf(dir, nginxKeepaliveServer([]string{"127.0.0.1:2", "127.0.0.1:3"}, "listen 127.0.0.1:1"))
	if err := os.WriteFile(dir+"/nginx.conf", []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	// As callgrind and strace run it: one process, in the foreground.
	if out, err := exec.Command(nginxBin(), nginxArgs(dir, "-g", "daemon off; master_process off;", "-t")...).CombinedOutput(); err != nil {
		t.Fatalf("nginx -t: %v: %s", err, out)
	}
}

func TestCallgrindTotalReadsTheTotalsLine(t *testing.T) {
	path := t.TempDir() + "/callgrind.out.1"
	dump := "# callgrind format\nversion: 1\ncreator: callgrind-3.19.0\nevents: Ir\nsummary: 5318516\n\nfn=(1) main\n0 12\ntotals: 5318516\n"
	if err := os.WriteFile(path, []byte(dump), 0o644); err != nil {
		t.Fatal(err)
	}
	if got, err := callgrindTotal(path); err != nil || got != 5318516 {
		t.Fatalf("callgrindTotal = %d, %v; want 5318516", got, err)
	}
	if err := os.WriteFile(path, []byte("events: Ir\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := callgrindTotal(path); err == nil {
		t.Fatal("a dump without a totals line read without an error")
	}
}
