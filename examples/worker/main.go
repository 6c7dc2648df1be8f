// Command worker is an instance that does more than serve HTTP: it takes
// jobs from a queue only while its color is live. The SDK tells it its
// status (Instance.States); on UP it starts consuming, on OUT_OF_SERVICE
// (or DOWN) it finishes the job in hand and stops, so that across a switch
// the new color takes over the queue and the old one goes quiet, with no
// job done twice or dropped.
//
// The queue here is ZooKeeper, which every switchyard deployment already
// has: a job is a node under QUEUE/jobs, claimed by deleting it (only one
// claimer can), and recorded done under QUEUE/done. The same pattern holds
// for Kafka, SQS or a cron scheduler: consume while UP.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/go-zookeeper/zk"
	"github.com/sirupsen/logrus"

	sdk "github.com/switchyard/switchyard/client-sdk"
	"github.com/switchyard/switchyard/registry"
	"github.com/switchyard/switchyard/registry/backends"
	"github.com/switchyard/switchyard/zkstate"
)

// Done is what a worker records for each job it did.
type Done struct {
	Job       string    `json:"job"`
	Color     string    `json:"color"`
	Instance  string    `json:"instance"`
	ClaimedAt time.Time `json:"claimed_at"`
}

func env(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func main() {
	var (
		color, listen, service, version, id, zkServers, regURL, token, zkRoot, zkAuth, queue string
		heartbeat, session, drain, jobTime                                                   time.Duration
	)
	flag.StringVar(&color, "color", "", "blue or green (required)")
	flag.StringVar(&listen, "listen", "127.0.0.1:0", "address of the SDK's control endpoints")
	flag.StringVar(&service, "service", "worker", "service name")
	flag.StringVar(&version, "version", "v1", "version to report")
	flag.StringVar(&id, "id", "", "instance id (default service-color-random)")
	flag.StringVar(&zkServers, "zk", env("SWITCHYARD_ZK", "127.0.0.1:2181"), "ZooKeeper servers (SWITCHYARD_ZK)")
	flag.StringVar(&regURL, "registry", env("SWITCHYARD_REGISTRY", "http://127.0.0.1:8761"), "registry URL (SWITCHYARD_REGISTRY)")
	flag.StringVar(&token, "token", env("SWITCHYARD_TOKEN", ""), "shared secret or instance token (SWITCHYARD_TOKEN)")
	flag.StringVar(&zkRoot, "zk-root", env("SWITCHYARD_ZK_ROOT", "/"), "ZooKeeper root (SWITCHYARD_ZK_ROOT)")
	flag.StringVar(&zkAuth, "zk-auth", env("SWITCHYARD_ZK_AUTH", ""), "ZooKeeper digest user:password (SWITCHYARD_ZK_AUTH)")
	flag.StringVar(&queue, "queue", "/worker-queue", "ZooKeeper path of the queue (jobs under QUEUE/jobs, results under QUEUE/done)")
	flag.DurationVar(&jobTime, "job-time", 10*time.Millisecond, "how long a job takes")
	flag.DurationVar(&heartbeat, "heartbeat", time.Second, "registry heartbeat interval")
	flag.DurationVar(&session, "zk-session-timeout", 10*time.Second, "ZooKeeper session timeout")
	flag.DurationVar(&drain, "drain-timeout", 10*time.Second, "longest wait for gateways to stop sending at shutdown")
	flag.Parse()
	log := logrus.StandardLogger()
	log.SetFormatter(&logrus.TextFormatter{FullTimestamp: true, TimestampFormat: "15:04:05.000"})
	auth, err := zkstate.ParseAuth(zkAuth)
	if err == nil && (color == "" || !strings.HasPrefix(queue, "/")) {
		err = errors.New("--color is required and --queue must be an absolute ZooKeeper path")
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "worker:", err)
		os.Exit(2)
	}
	reg, err := backends.Open(regURL, token)
	if err == nil {
		err = run(log, sdk.Config{
			Service: service, Color: zkstate.Color(color), ID: id, Version: version,
			ZK: strings.Split(zkServers, ","), ZKRoot: zkRoot, ZKAuth: auth, ZKSessionTimeout: session,
			Registry: reg, Token: token, HeartbeatInterval: heartbeat, DrainTimeout: drain, Log: log,
		}, listen, queue, jobTime)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "worker:", err)
		os.Exit(1)
	}
}

func run(log *logrus.Logger, cfg sdk.Config, listen, queue string, jobTime time.Duration) error {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	addr := ln.Addr().(*net.TCPAddr)
	cfg.Address, cfg.Port = addr.IP.String(), addr.Port
	inst, err := sdk.New(cfg)
	if err != nil {
		return err
	}
	conn, _, err := zk.Connect(cfg.ZK, cfg.ZKSessionTimeout, zk.WithLogInfo(false))
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := cfg.ZKAuth.Login(conn); err != nil {
		return err
	}
	for _, p := range []string{queue + "/jobs", queue + "/done"} {
		if err := zkstate.EnsurePath(conn, p, cfg.ZKAuth.ACL()); err != nil {
			return err
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	w := &worker{conn: conn, queue: queue, jobTime: jobTime, color: string(cfg.Color), id: inst.ID(), acl: cfg.ZKAuth.ACL(),
		log: log.WithField("instance", inst.ID())}
	// The worker stops taking jobs as soon as the drain begins (the SDK
	// says OUT_OF_SERVICE first); Serve returns once it is over.
	consumed := make(chan struct{})
	go func() { defer close(consumed); w.consume(ctx, inst.States(ctx)) }()
	srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: inst.ControlHandler()}
	fmt.Println("LISTEN " + net.JoinHostPort(addr.IP.String(), strconv.Itoa(addr.Port)) + " ID " + inst.ID())
	err = inst.Serve(ctx, srv, ln)
	<-consumed
	return err
}

type worker struct {
	conn      *zk.Conn
	queue     string
	jobTime   time.Duration
	color, id string
	acl       []zk.ACL
	log       logrus.FieldLogger
	done      int
}

// consume takes jobs while the last status said UP. A job in hand when the
// status changes is finished first: it was claimed, so nobody else will do
// it.
func (w *worker) consume(ctx context.Context, states <-chan registry.Status) {
	live := false
	for {
		if !live {
			st, ok := <-states
			if !ok {
				return
			}
			live = st == registry.StatusUp
			w.log.WithField("status", st).Info("worker status")
			continue
		}
		select {
		case st, ok := <-states:
			if !ok {
				return
			}
			live = st == registry.StatusUp
			w.log.WithFields(logrus.Fields{"status": st, "jobs_done": w.done}).Info("worker status")
			continue
		default:
		}
		if !w.takeOne(ctx) {
			// Nothing to take: wait for a job, a status or a short while.
			_, _, ch, err := w.conn.ChildrenW(w.queue + "/jobs")
			if err != nil {
				ch = nil
			}
			select {
			case <-ctx.Done():
				return
			case <-ch:
			case st, ok := <-states:
				if !ok {
					return
				}
				live = st == registry.StatusUp
				w.log.WithFields(logrus.Fields{"status": st, "jobs_done": w.done}).Info("worker status")
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
}

// takeOne claims the oldest job it can and does it; false when there was
// none to claim.
func (w *worker) takeOne(ctx context.Context) bool {
	jobs, _, err := w.conn.Children(w.queue + "/jobs")
	if err != nil || len(jobs) == 0 {
		return false
	}
	sort.Strings(jobs)
	for _, job := range jobs {
		if err := w.conn.Delete(w.queue+"/jobs/"+job, -1); err != nil {
			continue // another worker claimed it first
		}
		claimed := time.Now().UTC()
		select {
		case <-time.After(w.jobTime):
		case <-ctx.Done():
		}
		b, _ := json.Marshal(Done{Job: job, Color: w.color, Instance: w.id, ClaimedAt: claimed})
		if _, err := w.conn.Create(w.queue+"/done/"+job, b, 0, w.acl); err != nil {
			w.log.WithError(err).WithField("job", job).Error("could not record a job as done")
		}
		w.done++
		return true
	}
	return false
}
