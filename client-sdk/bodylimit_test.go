package sdk_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	sdk "github.com/switchyard/switchyard/client-sdk"
	"github.com/switchyard/switchyard/internal/testutil"
	"github.com/switchyard/switchyard/registry"
	"github.com/switchyard/switchyard/signing"
)

// An instruction is at most 4 KiB. Past that the instance answers 413 and
// closes the connection; net/http may first drain up to 256 KiB of a body
// sent in chunks (maxPostHandlerReadBytes). Buffers add a little.
const maxInstructionRead = 4<<10 + 256<<10 + 64<<10

func TestA50MBInstructionIsRefusedWithoutBeingRead(t *testing.T) {
	log := logrus.New()
	log.Out = io.Discard
	// New connects to nothing: the registry and ZooKeeper are only used by
	// Start, and a refused instruction never reaches the registry.
	inst, err := sdk.New(sdk.Config{Service: "hello", Color: "green", ID: "hello-green-big", Address: "127.0.0.1", Port: 9,
		ZK: []string{"127.0.0.1:1"}, Registry: registry.NewClient("http://127.0.0.1:1", "secret"), Token: fuzzKey, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	app := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "app") })
	ts := httptest.NewUnstartedServer(inst.Handler(app))
	rc := &testutil.CountingListener{Listener: ts.Listener}
	ts.Listener = rc
	ts.Start()
	defer ts.Close()
	keys, err := signing.ParseKeys(registry.InstanceToken(fuzzKey, fuzzID)) // the controller signs with the instance's key
	if err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		desc            string
		chunked, signed bool
	}{
		{desc: "unsigned, its length announced"},
		{desc: "unsigned, sent in chunks", chunked: true},
		{desc: "signed, its length announced", signed: true},
		{desc: "signed, sent in chunks", chunked: true, signed: true},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			body := testutil.NewHugeJSON(`{"status":"`)
			req, err := http.NewRequest(http.MethodPut, ts.URL+sdk.StatusPath, body.Reader())
			if err != nil {
				t.Fatal(err)
			}
			req.ContentLength = testutil.FiftyMB
			if tc.chunked {
				req.ContentLength = -1
			}
			if tc.signed {
				// Signed over another body: the size is refused before
				// the signature is looked at.
				mustSign(t, keys, req, []byte(`{"status":"UP"}`), signing.Claims{Subject: inst.ID(), Epoch: 1})
			}
			start := rc.Read.Load()
			client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: time.Minute}
			defer client.CloseIdleConnections()
			resp, err := client.Do(req)
			if err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusRequestEntityTooLarge {
					t.Errorf("answered %d, want 413 or a closed connection", resp.StatusCode)
				}
			} else {
				t.Logf("the instance closed the connection: %v", err)
			}
			testutil.Eventually(t, 10*time.Second, "the instance to close the connection", func() bool { return rc.Open() == 0 })
			n := rc.Read.Load() - start
			t.Logf("the instance read %d bytes; the client produced %d", n, body.Read.Load())
			if n > maxInstructionRead {
				t.Errorf("the instance read %d bytes of a 50 MB instruction before refusing it; want at most %d", n, maxInstructionRead)
			}
			if n := body.Read.Load(); n >= testutil.FiftyMB {
				t.Errorf("the client sent all %d bytes: nothing stopped it", n)
			}
			if st := inst.Status(); st != registry.StatusOutOfService {
				t.Errorf("status %s after a refused instruction", st)
			}
		})
	}
}
