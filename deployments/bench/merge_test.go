package bench

import (
	"strings"
	"testing"
	"time"
)

// partialTLSReport is a run of -only tls two days after sampleReport's,
// whose gateway used more memory than any reading before.
func partialTLSReport(rss uint64, note string) *Report {
	full := sampleReport()
	tg := func(name string, rps float64) *Target {
		return &Target{Name: name, Runs: []LoadResult{{RPS: rps, P50: msf(rps / 1000), P99: msf(rps / 100), CPUPerRequest: msf(rps / 1e5)}}}
	}
	return &Report{Date: full.Date.Add(48 * time.Hour), Took: 110 * time.Second, Conns: 32, WrkTime: wrkTime, Pause: loadPause,
		Machine: full.Machine, Only: []string{"tls"},
		TLS: &TLS{Negotiated: "TLSv1.3, TLS_AES_128_GCM_SHA256, X25519 with every proxy", Configs: []string{"nginx: ssl"}, Protocols: []*Protocol{{
			Name: ProtoH2, Load: "h2load -m10",
			Throughput: &Throughput{Order: []string{"gw → nginx", "nginx → gw"}, Targets: []*Target{tg(TargetGateway, 11000), tg(TargetNginx, 22000)}},
		}}},
		Memory: []MemRow{{Process: TargetGateway, When: "under h2load, HTTP/2 over TLS (largest sample)", Mem: Mem{RSS: rss, HWM: rss}}},
		Notes:  []string{note},
	}
}

// mergeRun writes r into doc as Run does.
func mergeRun(t *testing.T, doc string, r *Report) string {
	t.Helper()
	text, err := r.render(generated(doc))
	if err != nil {
		t.Fatal(err)
	}
	return spliceResults(doc, text)
}

func TestMergeResults(t *testing.T) {
	full := sampleReport()
	fullText, err := full.Markdown()
	if err != nil {
		t.Fatal(err)
	}
	doc := spliceResults("# Benchmarks\n\nintro\n\n## Results\n\n"+beginMarker+"\nold\n"+endMarker+"\n\n## Discussion\nkept\n", fullText)
	once := mergeRun(t, doc, partialTLSReport(45<<20, "tls: Caddy not available: no binary"))
	section := func(doc, head string) string {
		for _, c := range splitChunks(generated(doc)) {
			if strings.HasPrefix(c.head, head) {
				return c.text()
			}
		}
		return ""
	}

	t.Run("sections the run did not measure keep their figures", func(t *testing.T) {
		for _, head := range []string{"### 1.", "### 2.", "### 4."} {
			if was, is := section(doc, head), section(once, head); was == "" || is != was {
				t.Errorf("%s was\n%s\nand is\n%s", head, was, is)
			}
		}
		if !strings.HasSuffix(once, "## Discussion\nkept\n") || !strings.HasPrefix(once, "# Benchmarks\n\nintro\n") {
			t.Errorf("the text around the results changed:\n%s", once)
		}
	})
	t.Run("the run's own section is written", func(t *testing.T) {
		s := section(once, "### 6.")
		for _, want := range []string{
			"h2load negotiated TLSv1.3, TLS_AES_128_GCM_SHA256, X25519 with every proxy).",
			"**HTTP/2 over TLS.** h2load -m10. Rounds: gw → nginx; then nginx → gw.",
			"| switchyard gateway | 11000 | 11000 | 11.0 ms | 110 ms | 0 | 110 µs |\n| nginx | 22000 | 22000 | 22.0 ms | 220 ms | 0 | 220 µs |",
			"- **gateway/nginx**: throughput 0.50×, p50 0.50×, p99 0.50×",
			"- nginx: ssl",
		} {
			if !strings.Contains(s, want) {
				t.Errorf("section 6 lacks %q:\n%s", want, s)
			}
		}
	})
	t.Run("memory keeps every earlier reading and adds the run's; the targets judge them all", func(t *testing.T) {
		mem, targets := section(once, "### 5."), section(once, "### Targets")
		for _, want := range []string{"| gateway | under load | 21.0 MB | 22.0 MB |\n| switchyard gateway | under h2load, HTTP/2 over TLS (largest sample) | 45.0 MB | 45.0 MB |"} {
			if !strings.Contains(mem, want) {
				t.Errorf("memory lacks %q:\n%s", want, mem)
			}
		}
		for _, want := range []string{
			"| gateway throughput ≥ 1.0× nginx | 0.54× | **missed** |",
			"| 1,000-instance switch ≤ 1 s | 2887 ms | **missed** |",
			"| linear growth | 1.47 ms per instance at 10, 2.89 ms per instance at 1000 | |\n| gateway RSS ≤ 40 MB under load | 45.0 MB (under h2load, HTTP/2 over TLS) | **missed** |",
		} {
			if !strings.Contains(targets, want) {
				t.Errorf("targets lack %q:\n%s", want, targets)
			}
		}
	})
	t.Run("the header tells which run measured what", func(t *testing.T) {
		want := "Measured 2026-11-22 03:42 UTC by `make bench` in 3m52s.\n\n" +
			"`cmd/bench -only tls` measured those sections again 2026-11-24 03:42 UTC in 1m50s; every other figure is from an earlier run.\n\nMachine: "
		if !strings.Contains(once, beginMarker+"\n"+want) {
			t.Errorf("header is not %q:\n%s", want, once)
		}
	})
	t.Run("notes of other sections stay, the run's replace its own", func(t *testing.T) {
		if !strings.Contains(once, "#### Sections that did not complete\n\n- consul: no agent\n- tls: Caddy not available: no binary\n"+endMarker) {
			t.Errorf("notes:\n%s", once)
		}
	})
	t.Run("running the section again replaces it instead of adding to it", func(t *testing.T) {
		twice := mergeRun(t, once, partialTLSReport(30<<20, "tls: nginx not available: gone"))
		if n := strings.Count(twice, "`cmd/bench -only tls`"); n != 1 {
			t.Errorf("%d partial-run lines", n)
		}
		if strings.Count(twice, "### 6.") != 1 || strings.Contains(twice, "Caddy not available") || !strings.Contains(twice, "- consul: no agent\n- tls: nginx not available: gone") {
			t.Errorf("got:\n%s", twice)
		}
		// The new, smaller reading replaces the old one of the same moment.
		if !strings.Contains(twice, "| switchyard gateway | under h2load, HTTP/2 over TLS (largest sample) | 30.0 MB | 30.0 MB |") || !strings.Contains(twice, "| 30.0 MB (under h2load, HTTP/2 over TLS) | **met**") {
			t.Errorf("got:\n%s", twice)
		}
	})
	t.Run("a full run replaces everything", func(t *testing.T) {
		r := sampleReport()
		r.Notes = nil
		text, err := r.Markdown()
		if err != nil {
			t.Fatal(err)
		}
		if got := spliceResults(once, text); strings.Contains(got, "-only") || strings.Contains(got, "h2load, HTTP/2") {
			t.Errorf("got:\n%s", got)
		}
	})
}
