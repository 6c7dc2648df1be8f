package sdk_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	sdk "github.com/switchyard/switchyard/client-sdk"
	"github.com/switchyard/switchyard/registry"
	"github.com/switchyard/switchyard/registry/server"
	"github.com/switchyard/switchyard/signing"
)

const (
	fuzzKey      = "fuzz-instruction-key-0123456789"
	fuzzWrongKey = "fuzz-guessed-key-0123456789"
	fuzzID       = "hello-green-fuzz"
)

// How a fuzzed instruction is signed, by sign % signModes.
const (
	signNone      = iota // only what the fuzzer's own headers say
	signWrongKey         // a well-formed signature by a key the instance does not hold
	signRight            // signed for this instance with its key
	signSubject          // signed with its key for the fuzzer's subject
	signTampered         // signed, then the body changed on the way
	signElsewhere        // signed for another path of the instance
	signModes
)

type instructionSeed struct {
	method, target, headers string
	sign                    uint8
	subject                 string
	epoch                   int64
	chunked                 bool
	body                    string
}

func instructionSeeds() []instructionSeed {
	put := func(sign uint8, epoch int64, body string) instructionSeed {
		return instructionSeed{method: "PUT", target: sdk.StatusPath, sign: sign, subject: fuzzID, epoch: epoch, body: body}
	}
	seeds := []instructionSeed{
		put(signRight, 1, `{"status":"UP"}`),
		put(signRight, 1, `{"status":"OUT_OF_SERVICE"}`),
		put(signRight, 0, `{"status":"UP"}`),
		put(signRight, -1, `{"status":"UP"}`),
		put(signRight, 1<<62, `{"status":"UP"}`),
		put(signRight, 3, `{"status":"DOWN"}`),
		put(signRight, 3, `{"status":"STARTING"}`),
		put(signRight, 3, `{"status":"up"}`),
		put(signRight, 3, `{"status":"UP"}{"status":"OUT_OF_SERVICE"}`),
		put(signRight, 3, `{"status":"UP"} x`),
		put(signRight, 3, `{"status":"UP","color":"blue"}`),
		put(signRight, 3, `{"status":`),
		put(signRight, 3, ``),
		put(signRight, 3, "\xff\xfe\x00"),
		put(signRight, 3, `{"status":"UP"}`+strings.Repeat(" ", 5000)),
		put(signRight, 3, `{"status":"`+strings.Repeat("U", 4097)+`"}`),
		put(signRight, 3, `{"status":"UP","status":"OUT_OF_SERVICE"}`),
		put(signRight, 3, `{"Status":"UP"}`),
		put(signNone, 1, `{"status":"UP"}`),
		put(signWrongKey, 1, `{"status":"UP"}`),
		put(signTampered, 1, `{"status":"UP"}`),
		put(signElsewhere, 1, `{"status":"UP"}`),
		{method: "PUT", target: sdk.StatusPath, sign: signSubject, subject: "hello-green-other", epoch: 1, body: `{"status":"UP"}`},
		{method: "PUT", target: sdk.StatusPath, sign: signSubject, subject: strings.Repeat("a", 10000), epoch: 1, body: `{"status":"UP"}`},
		{method: "PUT", target: sdk.StatusPath, sign: signNone, headers: "Authorization: Bearer " + fuzzKey + "\r\n", body: `{"status":"UP"}`},
		{method: "PUT", target: sdk.StatusPath, sign: signNone, headers: "Authorization: SWITCHYARD-HMAC-SHA256 " + strings.Repeat("00", 32) + "\r\nX-Switchyard-Subject: " + fuzzID + "\r\nX-Switchyard-Epoch: 1\r\nX-Switchyard-Date: 0\r\nX-Switchyard-Nonce: 00000000000000000000000000000000\r\n", body: `{"status":"UP"}`},
		{method: "PUT", target: sdk.StatusPath, sign: signRight, subject: fuzzID, epoch: 2, chunked: true, body: `{"status":"UP"}`},
		{method: "PUT", target: sdk.StatusPath + "?x=1", sign: signRight, subject: fuzzID, epoch: 2, body: `{"status":"UP"}`},
		{method: "PUT", target: "/_switchyard/%73tatus", sign: signRight, subject: fuzzID, epoch: 2, body: `{"status":"UP"}`},
		{method: "PUT", target: "/_switchyard//status", sign: signRight, subject: fuzzID, epoch: 2, body: `{"status":"UP"}`},
		{method: "PUT", target: "http://instance" + sdk.StatusPath, sign: signRight, subject: fuzzID, epoch: 2, body: `{"status":"UP"}`},
		{method: "POST", target: sdk.StatusPath, sign: signRight, subject: fuzzID, epoch: 2, body: `{"status":"UP"}`},
		{method: "GET", target: sdk.StatusPath},
		{method: "GET", target: sdk.HealthPath},
		{method: "HEAD", target: sdk.HealthPath},
		{method: "DELETE", target: "/_switchyard/"},
		{method: "GET", target: "/app"},
		{method: "PUT", target: "/app", sign: signRight, subject: fuzzID, epoch: 2, body: `{"status":"UP"}`},
		// Framing the instance's server would see from a confused client.
		{method: "PUT", target: sdk.StatusPath, sign: signRight, subject: fuzzID, epoch: 2, headers: "Transfer-Encoding: chunked\r\n", body: `{"status":"UP"}`},
		{method: "PUT", target: sdk.StatusPath, sign: signRight, subject: fuzzID, epoch: 2, headers: "X-Folded: a\r\n b\r\n", body: `{"status":"UP"}`},
		{method: "PUT", target: sdk.StatusPath, sign: signRight, subject: fuzzID, epoch: 2, headers: "Content-Length: 2\r\n", body: `{"status":"UP"}`},
	}
	return seeds
}

func FuzzInstruction(f *testing.F) {
	for _, s := range instructionSeeds() {
		f.Add(s.method, s.target, s.headers, s.sign, s.subject, s.epoch, s.chunked, []byte(s.body))
	}
	log := logrus.New()
	log.Out = io.Discard
	regSrv, err := server.New(server.Config{Token: "secret", LeaseTTL: time.Minute, Log: log})
	if err != nil {
		f.Fatal(err)
	}
	ts := httptest.NewServer(regSrv.Handler())
	f.Cleanup(ts.Close)
	reg := registry.NewClient(ts.URL, "secret")
	keys, err := signing.ParseKeys(registry.InstanceToken(fuzzKey, fuzzID)) // the controller signs with the instance's key
	if err != nil {
		f.Fatal(err)
	}
	wrong, err := signing.ParseKeys(fuzzWrongKey)
	if err != nil {
		f.Fatal(err)
	}
	app := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "app") })

	f.Fuzz(func(t *testing.T, method, target, headers string, sign uint8, subject string, epoch int64, chunked bool, body []byte) {
		ctx := context.Background()
		if err := reg.Register(ctx, registry.Instance{ID: fuzzID, Service: "hello", Color: "green", Address: "127.0.0.1", Port: 9, Status: registry.StatusOutOfService}); err != nil {
			t.Fatal(err)
		}
		inst, err := sdk.New(sdk.Config{Service: "hello", Color: "green", ID: fuzzID, Address: "127.0.0.1", Port: 9,
			ZK: []string{"127.0.0.1:1"}, Registry: reg, Token: fuzzKey, Log: log})
		if err != nil {
			t.Fatal(err)
		}
		h := inst.Handler(app)

		req, seen := parseInstruction(method, target, headers, chunked, body)
		if req == nil {
			return // the instance's HTTP server refuses it before the handler
		}
		mode := sign % signModes
		claims := signing.Claims{Subject: fuzzID, Epoch: epoch}
		switch mode {
		case signWrongKey:
			mustSign(t, wrong, req, seen, claims)
		case signRight:
			mustSign(t, keys, req, seen, claims)
		case signSubject:
			claims.Subject = subject
			mustSign(t, keys, req, seen, claims)
		case signTampered:
			mustSign(t, keys, req, seen, claims)
			seen = append(bytes.Clone(seen), ' ')
		case signElsewhere:
			other := req.Clone(ctx)
			other.URL.Path, other.URL.RawPath = sdk.HealthPath, ""
			if req.URL.EscapedPath() == other.URL.EscapedPath() {
				other.URL.Path = sdk.StatusPath
			}
			mustSign(t, keys, other, seen, claims)
			req.Header = other.Header
		}
		instruction := req.Method == http.MethodPut && req.URL.Path == sdk.StatusPath
		desc := fmt.Sprintf("%s %q mode %d subject %.40q epoch %d body %.200q", req.Method, req.RequestURI, mode, claims.Subject, epoch, seen)

		code, answer := serveOnce(h, req, seen)
		desc += fmt.Sprintf(": %d %.300s", code, answer)
		if code >= 500 || code < 100 {
			t.Fatalf("%s: the instance must never answer a server error here", desc)
		}
		status := inst.Status()
		if !instruction {
			if status != registry.StatusOutOfService {
				t.Fatalf("%s: a request that is no instruction changed the status to %s", desc, status)
			}
			return
		}
		authentic := mode == signRight || mode == signSubject
		switch {
		case len(seen) > 4096:
			if code != http.StatusRequestEntityTooLarge {
				t.Fatalf("%s: a body over 4 KiB must be refused with 413", desc)
			}
		case !authentic || epoch < 0:
			if code != http.StatusUnauthorized {
				t.Fatalf("%s: an instruction without a valid signature must be refused with 401", desc)
			}
		case claims.Subject != fuzzID:
			if code != http.StatusForbidden {
				t.Fatalf("%s: an instruction signed for another instance must be refused with 403", desc)
			}
		default:
			if code != http.StatusOK && code != http.StatusBadRequest {
				t.Fatalf("%s: an authentic instruction must be applied (200) or refused as malformed (400)", desc)
			}
		}
		if code != http.StatusOK {
			if status != registry.StatusOutOfService {
				t.Fatalf("%s: a refused instruction changed the status to %s", desc, status)
			}
		} else {
			var in struct{ Status registry.Status }
			if err := json.Unmarshal(seen, &in); err != nil || in.Status != status || (status != registry.StatusUp && status != registry.StatusOutOfService) {
				t.Fatalf("%s: applied %s from a body that does not ask for it (%v)", desc, status, err)
			}
		}
		if got := registryStatus(t, reg); got != status {
			t.Fatalf("%s: the SDK believes %s, the registry says %s", desc, status, got)
		}
		if code == http.StatusUnauthorized || code == http.StatusRequestEntityTooLarge {
			return
		}
		// The signature was accepted: the very same request again is a
		// replay, and an older leader's instruction is stale.
		if again, answer := serveOnce(h, req, seen); again != http.StatusUnauthorized || !strings.Contains(answer, "replayed") {
			t.Fatalf("%s: its replay answered %d %s, want 401 replayed", desc, again, answer)
		}
		if code == http.StatusForbidden || epoch <= 0 {
			return
		}
		stale, _ := http.NewRequest(http.MethodPut, "http://instance"+sdk.StatusPath, nil)
		flip := []byte(`{"status":"UP"}`)
		if status == registry.StatusUp {
			flip = []byte(`{"status":"OUT_OF_SERVICE"}`)
		}
		mustSign(t, keys, stale, flip, signing.Claims{Subject: fuzzID, Epoch: epoch - 1})
		if old, answer := serveOnce(h, stale, flip); old != http.StatusConflict {
			t.Fatalf("%s: an instruction from epoch %d answered %d %s, want 409", desc, epoch-1, old, answer)
		}
		if inst.Status() != status || registryStatus(t, reg) != status {
			t.Fatalf("%s: a stale leader's instruction changed the status", desc)
		}
	})
}

// parseInstruction puts a request on the wire as a client would and reads
// it as the instance's server does; it returns nil when net/http refuses
// it, and the body the handler will read.
func parseInstruction(method, target, headers string, chunked bool, body []byte) (*http.Request, []byte) {
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: instance\r\n%s", method, target, headers)
	if chunked {
		b.WriteString("Transfer-Encoding: chunked\r\n\r\n")
		if len(body) > 0 {
			fmt.Fprintf(&b, "%x\r\n%s\r\n", len(body), body)
		}
		b.WriteString("0\r\n\r\n")
	} else {
		fmt.Fprintf(&b, "Content-Length: %d\r\n\r\n", len(body))
		b.Write(body)
	}
	req, err := http.ReadRequest(bufio.NewReader(&b))
	if err != nil {
		return nil, nil
	}
	seen, err := io.ReadAll(req.Body)
	if err != nil {
		return nil, nil
	}
	req.RemoteAddr = "192.0.2.1:1234"
	return req, seen
}

func mustSign(t *testing.T, k signing.Keyring, req *http.Request, body []byte, c signing.Claims) {
	t.Helper()
	if err := k.Sign(req, body, c); err != nil {
		t.Fatal(err)
	}
}

// serveOnce hands req with body to h and returns the answer.
func serveOnce(h http.Handler, req *http.Request, body []byte) (int, string) {
	r := req.Clone(context.Background())
	r.Body = io.NopCloser(bytes.NewReader(body))
	r.ContentLength = int64(len(body))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, r)
	return rec.Code, rec.Body.String()
}

func registryStatus(t *testing.T, reg *registry.Client) registry.Status {
	t.Helper()
	snap, err := reg.Instances(context.Background(), "hello", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range snap.Instances {
		if in.ID == fuzzID {
			return in.Status
		}
	}
	return ""
}
