package bench

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/switchyard/switchyard/deployments/local"
	"github.com/switchyard/switchyard/internal/retry"
	"github.com/switchyard/switchyard/zkstate"
)

// Protocol names of the TLS and HTTP/2 tables.
const (
	ProtoHTTPS = "HTTPS, HTTP/1.1 keep-alive"
	ProtoH2    = "HTTP/2 over TLS"
	ProtoH2C   = "h2c, HTTP/2 with prior knowledge on the plain port"
)

// h2Streams is how many requests h2load keeps in flight on each of its
// connections.
const h2Streams = 10

// TLS is the TLS and HTTP/2 section: one table per protocol, the same
// proxies in front of the same backends as the throughput section.
type TLS struct {
	Protocols  []*Protocol
	Configs    []string // how each proxy serves the protocols
	Negotiated string   // the TLS version, cipher and key exchange h2load got
}

// Protocol is one way of talking to the proxies, measured as Throughput is.
type Protocol struct {
	Name, Load string // the table's title; the load generator and its settings
	*Throughput
}

// tlsEndpoints are where one proxy serves each protocol.
type tlsEndpoints struct{ https, h2, h2c string }

// tlsBench measures the gateway, nginx and Caddy over HTTPS with HTTP/1.1,
// HTTP/2 over TLS and h2c, all with cert, in front of the cluster's two
// blue backends. gwTLS is the gateway's --tls-listen address.
func (b *bencher) tlsBench(ctx context.Context, c *local.Cluster, gwTLS string, cert certFiles) error {
	backends, err := blueBackends(c)
	if err != nil {
		return err
	}
	dir := filepath.Join(b.dir, "tls")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	addrs := make([]string, 5)
	for i := range addrs {
		if addrs[i], err = freeAddr(); err != nil {
			return err
		}
	}
	gwPID, _ := pidOf(c.Gateway)
	type proxy struct {
		name, config string
		pid          int
		at           tlsEndpoints
	}
	proxies := []*proxy{{
		name:   TargetGateway,
		config: "switchyard gateway: `--tls-listen` with `--tls-cert`/`--tls-key` (HTTP/2 and HTTP/1.1 by ALPN), h2c on its plain `--listen` port (the one section 1 measures); HTTP/1.1 keep-alive to the backends",
		pid:    gwPID, at: tlsEndpoints{"https://" + gwTLS + "/", "https://" + gwTLS + "/", c.GatewayURL + "/"},
	}}

	nginxAt := tlsEndpoints{"https://" + addrs[0] + "/", "https://" + addrs[1] + "/", "http://" + addrs[2] + "/"}
	ng, err := startNginx(ctx, filepath.Join(dir, "nginx"), nginxTLSServer(backends, addrs[0], addrs[1], addrs[2], cert), addrs[0])
	if err == nil {
		defer ng.stop(syscall.SIGQUIT, 5*time.Second)
		proxies = append(proxies, &proxy{name: TargetNginx, pid: ng.pid(), at: nginxAt,
			config: "nginx " + b.r.Machine.Nginx + ": `listen … ssl` (HTTPS/1.1), `listen … ssl http2` (HTTP/2; nginx 1.22 turns it on per listen, so HTTPS/1.1 has a plain `ssl` listen of its own), `listen … http2` (h2c), `ssl_protocols TLSv1.2 TLSv1.3` (1.22 leaves 1.3 out by default), `ssl_prefer_server_ciphers on` with Go's order of the TLS 1.3 suites (AES-128-GCM first: OpenSSL's clients, wrk among them, would otherwise get AES-256-GCM from nginx and AES-128-GCM from the Go servers), `keepalive_requests " + strconv.Itoa(nginxKeepaliveRequests) + "` (its default of 1000 ends each connection with a GOAWAY after 1000 requests, and h2load does not reconnect), the upstream with keepalive 64 of section 1"})
	} else {
		b.note("tls: nginx not available: %v", err)
	}

	if b.caddy == "" {
		b.note("tls: Caddy not available: %s", b.noCaddy)
	} else {
		cd, err := startCaddy(ctx, b.caddy, filepath.Join(dir, "caddy"), addrs[3], "\tservers {\n\t\tprotocols h1 h2 h2c\n\t}\n",
			caddySite("https://"+addrs[3], backends, "bind 127.0.0.1", "tls "+cert.Cert+" "+cert.Key),
			caddySite("http://"+addrs[4], backends, "bind 127.0.0.1"))
		if err == nil {
			defer cd.stop(syscall.SIGQUIT, 5*time.Second)
			proxies = append(proxies, &proxy{name: TargetCaddy, pid: cd.pid(), at: tlsEndpoints{"https://" + addrs[3] + "/", "https://" + addrs[3] + "/", "http://" + addrs[4] + "/"},
				config: "Caddy " + b.r.Machine.Caddy + ": an `https://` site with `tls CERT KEY` (HTTP/2 and HTTP/1.1 by ALPN), an `http://` site, `servers { protocols h1 h2 h2c }`, reverse_proxy with lb_policy round_robin, admin off"})
		} else {
			b.note("tls: Caddy not available: %v", err)
		}
	}

	logs := filepath.Join(dir, "h2load")
	if err := os.MkdirAll(logs, 0o755); err != nil {
		return err
	}
	h2 := func(ctx context.Context, d time.Duration, tg *Target) (LoadResult, error) {
		return h2loadRun(ctx, d, tg.url, logs)
	}
	res := &TLS{}
	b.r.TLS = res
	for _, p := range []struct {
		name, load, memWhen string
		url                 func(tlsEndpoints) string
		client              *http.Client
		run                 func(context.Context, time.Duration, *Target) (LoadResult, error)
	}{
		{ProtoHTTPS, fmt.Sprintf("wrk `-t2 -c%d -d%s --latency` against `https://`, keep-alive (wrk offers no ALPN, so every proxy speaks HTTP/1.1)", conns, wrkTime),
			"under wrk over TLS (largest sample)", func(e tlsEndpoints) string { return e.https }, protoClient(cert.Pool, "http/1.1"),
			func(ctx context.Context, d time.Duration, tg *Target) (LoadResult, error) {
				return wrkRun(ctx, d, tg.url, "")
			}},
		{ProtoH2, fmt.Sprintf("h2load `-t2 -c%d -m%d -D %s` against `https://` (ALPN h2): %d connections with up to %d streams each, so %d requests in flight where wrk has %d", conns, h2Streams, wrkTime, conns, h2Streams, conns*h2Streams, conns),
			"under h2load, HTTP/2 over TLS (largest sample)", func(e tlsEndpoints) string { return e.h2 }, protoClient(cert.Pool, "h2"), h2},
		{ProtoH2C, fmt.Sprintf("h2load `-t2 -c%d -m%d -D %s` against `http://`, which h2load speaks as h2c with prior knowledge", conns, h2Streams, wrkTime),
			"under h2load, h2c (largest sample)", func(e tlsEndpoints) string { return e.h2c }, protoClient(cert.Pool, "h2c"), h2},
	} {
		t := &Throughput{}
		for _, px := range proxies {
			tg := &Target{Name: px.name, url: p.url(px.at), pid: px.pid}
			// Each proxy must answer with a blue backend, in this protocol
			// and with the CA's certificate verified, before it is measured.
			if err := checkProto(ctx, p.client, tg.url); err != nil {
				b.note("tls: %s through %s not available: %v", p.name, px.name, err)
				continue
			}
			t.Targets = append(t.Targets, tg)
		}
		if len(t.Targets) == 0 {
			continue
		}
		res.Protocols = append(res.Protocols, &Protocol{Name: p.name, Load: p.load, Throughput: t})
		b.measure(ctx, "tls "+p.name, t, p.memWhen, p.run)
	}
	negotiated := map[string]string{}
	for _, px := range proxies {
		res.Configs = append(res.Configs, px.config)
		for _, p := range res.Protocols {
			if tg := p.get(px.name); tg != nil && tg.Runs[0].TLS != "" {
				negotiated[px.name] = tg.Runs[0].TLS
			}
		}
	}
	res.Negotiated = negotiatedText(negotiated)
	return nil
}

// negotiatedText says what TLS each proxy negotiated with h2load, once if
// all did the same.
func negotiatedText(by map[string]string) string {
	if len(by) == 0 {
		return ""
	}
	names := slices.Sorted(maps.Keys(by))
	same := true
	for _, n := range names {
		same = same && by[n] == by[names[0]]
	}
	if same {
		return by[names[0]] + " with every proxy"
	}
	for i, n := range names {
		names[i] = n + ": " + by[n]
	}
	return strings.Join(names, "; ")
}

// blueBackends are the addresses of the cluster's blue instances, which
// every proxy of the throughput sections stands in front of.
func blueBackends(c *local.Cluster) ([]string, error) {
	var backends []string
	for _, in := range c.Instances {
		if in.Color == zkstate.Blue {
			backends = append(backends, in.Addr)
		}
	}
	if len(backends) < 2 {
		return nil, fmt.Errorf("want two blue backends, have %d", len(backends))
	}
	return backends, nil
}

// nginxTLSServer serves HTTPS/1.1 on https, HTTP/2 over TLS on h2 and h2c
// on h2c (nginx 1.22 turns HTTP/2 on per listen), all with cert and the
// keep-alive upstream of the throughput section. nginx ends a client
// connection after keepalive_requests (1000 by default, HTTP/2 included)
// with a GOAWAY, and h2load does not reconnect: its connections would all
// be gone after 32,000 requests. The gateway and Caddy set no such limit.
func nginxTLSServer(backends []string, https, h2, h2c string, cert certFiles) string {
	return nginxKeepaliveServer(backends, "listen "+https+" ssl", "listen "+h2+" ssl http2", "listen "+h2c+" http2",
		"ssl_certificate "+cert.Cert, "ssl_certificate_key "+cert.Key, "ssl_protocols TLSv1.2 TLSv1.3",
		"ssl_prefer_server_ciphers on", "ssl_conf_command Ciphersuites "+tls13Suites,
		"keepalive_requests "+strconv.Itoa(nginxKeepaliveRequests))
}

// tls13Suites is Go's order of the TLS 1.3 cipher suites on a machine
// with AES instructions. The gateway and Caddy choose by it whatever the
// client prefers; nginx 1.22 follows the client, and wrk and `openssl
// s_client` (OpenSSL's defaults) put AES-256 first, so nginx is told to
// choose by it too, and every proxy encrypts alike.
const tls13Suites = "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"

// nginxKeepaliveRequests is more requests than any connection of a run
// sends.
const nginxKeepaliveRequests = 10_000_000

// protoClient speaks exactly one protocol: "http/1.1" or "h2" over TLS
// trusting roots, or "h2c" with prior knowledge.
func protoClient(roots *x509.CertPool, proto string) *http.Client {
	var p http.Protocols
	switch proto {
	case "http/1.1":
		p.SetHTTP1(true)
	case "h2":
		p.SetHTTP2(true)
	case "h2c":
		p.SetUnencryptedHTTP2(true)
	}
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		Protocols: &p, TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12},
	}}
}

// checkProto waits up to 10 s for url to answer 200 from a blue backend
// in the protocol hc speaks.
func checkProto(ctx context.Context, hc *http.Client, url string) error {
	var last error
	err := retry.Until(ctx, 10*time.Second, func() (bool, error) {
		last = getBlue(ctx, hc, url)
		return last == nil, nil
	})
	if err != nil && last != nil {
		return last
	}
	return err
}

func getBlue(ctx context.Context, hc *http.Client, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	if c := zkstate.Color(resp.Header.Get("X-Switchyard-Color")); c != zkstate.Blue {
		return fmt.Errorf("%s answered %q instead of a blue backend", url, c)
	}
	return nil
}

// h2loadRun runs h2load with the shared connection count and h2Streams
// streams per connection against url for d; the per-request log it
// writes into dir gives the percentiles.
func h2loadRun(ctx context.Context, d time.Duration, url, dir string) (LoadResult, error) {
	logf, err := os.CreateTemp(dir, "requests-*.tsv")
	if err != nil {
		return LoadResult{}, err
	}
	logf.Close()
	defer os.Remove(logf.Name())
	args := []string{"-t2", "-c" + strconv.Itoa(conns), "-m" + strconv.Itoa(h2Streams), "-D", strconv.Itoa(int(d.Seconds())), "--log-file=" + logf.Name()}
	ctx, cancel := context.WithTimeout(ctx, d+30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "h2load", append(args, url)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return LoadResult{}, fmt.Errorf("h2load %s: %w: %s", strings.Join(args, " "), err, out)
	}
	log, err := os.ReadFile(logf.Name())
	if err != nil {
		return LoadResult{}, err
	}
	return parseH2load(string(out), log)
}

var (
	h2Finished = regexp.MustCompile(`(?m)^finished in \S+, ([\d.]+) req/s`)
	h2Requests = regexp.MustCompile(`(?m)^requests: \d+ total, \d+ started, \d+ done, \d+ succeeded, (\d+) failed`)
	h2Proto    = regexp.MustCompile(`(?m)^Application protocol: (\S+)`)
	h2TLS      = regexp.MustCompile(`(?m)^TLS Protocol: (\S+)\s+Cipher: (\S+)(?:\s+Server Temp Key: (\S+))?`)
)

// parseH2load reads h2load's report and its --log-file. The report's
// request times are min, max, mean and sd only, so p50 and p99 come from
// the log's third column, each request's microseconds until the end of
// its response. Errors are h2load's failed requests: streams that failed
// or were reset, timeouts, and responses other than 2xx and 3xx. A run
// that did not speak HTTP/2 is an error.
func parseH2load(out string, log []byte) (LoadResult, error) {
	var r LoadResult
	fin, req, proto := h2Finished.FindStringSubmatch(out), h2Requests.FindStringSubmatch(out), h2Proto.FindStringSubmatch(out)
	if fin == nil || req == nil {
		return r, fmt.Errorf("h2load: report lacks req/s or the request counts:\n%s", out)
	}
	if proto == nil || (proto[1] != "h2" && proto[1] != "h2c") {
		return r, fmt.Errorf("h2load: no HTTP/2 negotiated:\n%s", out)
	}
	r.Proto = proto[1]
	if m := h2TLS.FindStringSubmatch(out); m != nil {
		r.TLS = strings.TrimSuffix(m[1]+", "+m[2]+", "+m[3], ", ")
	}
	r.RPS, _ = strconv.ParseFloat(fin[1], 64)
	r.Errors, _ = strconv.ParseInt(req[1], 10, 64)
	var ds []time.Duration
	err := eachH2loadRequest(log, func(status int, d time.Duration) error {
		if status > 0 { // -1 is a failed stream, counted in Errors
			ds = append(ds, d)
		}
		return nil
	})
	if err != nil {
		return r, err
	}
	if len(ds) == 0 {
		return r, errors.New("h2load: the request log has no completed request")
	}
	r.P50, r.P99 = pct(ds, 50), pct(ds, 99)
	return r, nil
}

// eachH2loadRequest calls f with each request's status and time from
// h2load's --log-file (start, status, microseconds to the end of the
// answer).
func eachH2loadRequest(log []byte, f func(status int, d time.Duration) error) error {
	sc := bufio.NewScanner(bytes.NewReader(log))
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) < 3 {
			continue
		}
		status, err1 := strconv.Atoi(fs[1])
		us, err2 := strconv.ParseInt(fs[2], 10, 64)
		if err := errors.Join(err1, err2); err != nil {
			return fmt.Errorf("h2load: request log line %q: %w", sc.Text(), err)
		}
		if err := f(status, time.Duration(us)*time.Microsecond); err != nil {
			return err
		}
	}
	return nil
}
