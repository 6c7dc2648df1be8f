//go:build linux

package gateway

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// nginxBinary is the nginx the conformance suite compares the gateway with;
// "" when none is installed.
func nginxBinary() string {
	if p, err := exec.LookPath("nginx"); err == nil {
		return p
	}
	if _, err := os.Stat("/usr/sbin/nginx"); err == nil {
		return "/usr/sbin/nginx"
	}
	return ""
}

// runNginx runs nginx with its own prefix under t.TempDir() until the test
// ends, serving the http block conf(addrs) makes for n loopback addresses,
// and returns the addresses.
//
// It runs as a single process (master_process off) with the parent-death
// signal, so nothing of it outlives a test binary killed before its
// cleanups run; a worker of a master would. Request handling is a
// worker's. (nginx 1.22 crashes when it inherits its listening sockets in
// this mode, so it binds free ports itself; should another process take
// one in between, it starts again on new ones.)
func runNginx(t *testing.T, bin string, n int, conf func(addrs []string) string) []string {
	t.Helper()
	var lastErr string
	for range 3 {
		addrs := make([]string, n)
		for i := range addrs {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			addrs[i] = ln.Addr().String()
			ln.Close()
		}
		ok, errLog := startNginx(t, bin, conf(addrs), addrs)
		if ok {
			return addrs
		}
		if !strings.Contains(errLog, "Address already in use") {
			t.Fatalf("nginx did not start:\n%s", errLog)
		}
		lastErr = errLog
	}
	t.Fatalf("nginx found no free port in 3 attempts:\n%s", lastErr)
	return nil
}

// startNginx starts nginx on addrs and waits until it answers on the first.
// It reports false, with the error log, when nginx exits first.
func startNginx(t *testing.T, bin, httpConf string, addrs []string) (bool, string) {
	t.Helper()
	dir := t.TempDir()
	for _, d := range []string{"logs", "tmp/body", "tmp/proxy", "tmp/fastcgi", "tmp/uwsgi", "tmp/scgi"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	conf := filepath.Join(dir, "nginx.conf")
	errLog := filepath.Join(dir, "logs", "error.log")
	text := fmt.Sprintf(`daemon off;
master_process off;
pid %[1]s/nginx.pid;
error_log %[1]s/logs/error.log info;
events { worker_connections 256; }
http {
    access_log %[1]s/logs/access.log;
    client_body_temp_path %[1]s/tmp/body;
    proxy_temp_path %[1]s/tmp/proxy;
    fastcgi_temp_path %[1]s/tmp/fastcgi;
    uwsgi_temp_path %[1]s/tmp/uwsgi;
    scgi_temp_path %[1]s/tmp/scgi;
%[2]s
}
`, dir, httpConf)
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	command := func(args ...string) *exec.Cmd {
		cmd := exec.Command(bin, append([]string{"-p", dir, "-c", conf, "-e", errLog}, args...)...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		return cmd
	}
	if out, err := command("-t").CombinedOutput(); err != nil {
		t.Fatalf("nginx -t: %v\n%s\n%s", err, out, text)
	}

	stderr, err := os.Create(filepath.Join(dir, "logs", "stderr.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer stderr.Close()
	cmd := command()
	cmd.Stdout, cmd.Stderr = stderr, stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start nginx: %v", err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		// SIGQUIT is nginx's graceful shutdown; a connection a case left
		// open must not hold it up for long.
		_ = cmd.Process.Signal(syscall.SIGQUIT)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			b, _ := os.ReadFile(errLog)
			t.Logf("nginx error log:\n%s", b)
		}
	})

	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			b, _ := os.ReadFile(errLog)
			return false, string(b)
		case <-time.After(20 * time.Millisecond):
		}
		if answersAsNginx(addrs[0]) {
			return true, ""
		}
	}
	b, _ := os.ReadFile(errLog)
	t.Fatalf("nginx did not answer on %s within 10s:\n%s", addrs[0], b)
	return false, ""
}

// answersAsNginx reports whether nginx, not whatever else might have taken
// the port, answers an HTTP request on addr.
func answersAsNginx(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("GET /_nginx_ready HTTP/1.0\r\n\r\n")); err != nil {
		return false
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return strings.HasPrefix(resp.Header.Get("Server"), "nginx")
}
