package main

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/switchyard/switchyard/gateway"
)

func gatewayCmd(c *common) *cobra.Command {
	var (
		cfg                        gateway.Config
		routes, certs, keys, proxy []string
		configFile, maxBody        string
		accessLog, accessFormat    string
		accessRate                 int
		preserveHost, stripPrefix  bool
		streamGrace                time.Duration
	)
	cmd := &cobra.Command{
		Use:   "gateway",
		Short: "Run the edge router",
		Long: `Run the edge router: HTTP/1.1 and h2c on --listen, HTTPS with HTTP/2 on
--tls-listen when certificates are given, and with --preview-listen each
service's idle color (its OUT_OF_SERVICE instances while the other color is
live) for checks before a switch. Routes come from --route flags or,
for hosts, headers and per-route settings, from --config FILE (YAML; see
deployments/gateway.example.yaml). SIGHUP reloads the config file and the
certificates and reopens the access log; a bad config is refused and the
last good one keeps serving.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if configFile != "" && len(routes) > 0 {
				return usageError(errors.New("gateway: give routes with --config or with --route, not both"))
			}
			limit, err := gateway.ParseSize(maxBody)
			if err != nil {
				return usageError(fmt.Errorf("--max-body: %w", err))
			}
			for _, r := range routes {
				rt, err := gateway.ParseRoute(r)
				if err != nil {
					return usageError(err)
				}
				rt.PreserveHost, rt.StripPrefix, rt.MaxBody = preserveHost, stripPrefix, limit
				cfg.Routes = append(cfg.Routes, rt)
			}
			if configFile != "" {
				fc, err := gateway.LoadConfig(configFile)
				if err != nil {
					return usageError(err)
				}
				cfg.Routes = fc.Routes
				if !cmd.Flags().Changed("preview-listen") {
					cfg.PreviewListen = fc.PreviewListen
				}
			}
			if len(certs) != len(keys) {
				return usageError(errors.New("gateway: give one --tls-key per --tls-cert, in the same order"))
			}
			for i := range certs {
				cfg.Certs = append(cfg.Certs, gateway.CertPair{Cert: certs[i], Key: keys[i]})
			}
			for _, p := range proxy {
				pfx, err := parsePrefix(p)
				if err != nil {
					return usageError(fmt.Errorf("--trusted-proxy %q: %w", p, err))
				}
				cfg.TrustedProxies = append(cfg.TrustedProxies, pfx)
			}
			if streamGrace == 0 {
				streamGrace = -1 // 0 on the command line means at once
			}
			cfg.StreamGrace = streamGrace
			cfg.AccessLog, err = gateway.OpenAccessLog(accessLog, accessFormat, gateway.AccessLogOptions{Rate: accessRate, Log: c.log})
			if err != nil {
				return usageError(err)
			}
			b, err := c.backend()
			if err != nil {
				return err
			}
			cfg.Source, cfg.Log = b, c.log
			gw, err := gateway.New(cfg)
			if err != nil {
				return usageError(err)
			}
			hup := make(chan os.Signal, 1)
			signal.Notify(hup, syscall.SIGHUP)
			defer signal.Stop(hup)
			go func() {
				for range hup {
					reload(gw, configFile, !cmd.Flags().Changed("preview-listen"), c)
				}
			}()
			return gw.Run(cmd.Context())
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Listen, "listen", "127.0.0.1:8088", "address for HTTP/1.1 and h2c (HTTP/2 with prior knowledge)")
	f.StringVar(&cfg.PreviewListen, "preview-listen", "", "address serving each service's idle color through the same routes, for checks before a switch (empty: none; also preview_listen in --config)")
	f.StringArrayVar(&routes, "route", nil, "PREFIX=SERVICE, repeatable; the longest prefix wins")
	f.StringVar(&configFile, "config", "", "YAML file of routes (hosts, headers, per-route timeouts, retries, body limits); reloaded on SIGHUP")
	f.BoolVar(&preserveHost, "preserve-host", false, "send the client's Host on to instances (--route routes)")
	f.BoolVar(&stripPrefix, "strip-prefix", false, "remove the route's prefix from the path sent on (--route routes)")
	f.StringVar(&maxBody, "max-body", "0", "largest request body, e.g. 10MiB; over it 413 (--route routes; 0 = no limit)")
	f.StringVar(&cfg.ID, "id", "", "gateway id in reports (default hostname and listen address)")
	f.StringVar(&cfg.Admin, "admin", "127.0.0.1:8089", "address of /metrics, /healthz and /v1/routes; empty for none")

	f.DurationVar(&cfg.Timeouts.Connect, "connect-timeout", 5*time.Second, "longest wait to connect to an instance")
	f.DurationVar(&cfg.Timeouts.ResponseHeader, "response-header-timeout", 60*time.Second, "longest wait for an instance's answer to begin; then 504")
	f.DurationVar(&cfg.Timeouts.Read, "read-timeout", 60*time.Second, "longest silence of an instance within its answer, streams included")
	f.DurationVar(&cfg.Timeouts.Request, "request-timeout", 0, "longest whole exchange, streams exempt; then 504 (0 = none)")
	f.DurationVar(&cfg.Timeouts.ClientBody, "client-body-timeout", 60*time.Second, "longest silence of a client sending its body; then 408")
	f.DurationVar(&cfg.Timeouts.Idle, "upstream-idle-timeout", 60*time.Second, "how long an idle keep-alive connection to an instance is kept")
	f.DurationVar(&cfg.ClientHeaderTimeout, "client-header-timeout", 60*time.Second, "longest wait for a request's head; then 408")
	f.DurationVar(&cfg.ClientIdleTimeout, "client-idle-timeout", 75*time.Second, "how long an idle client keep-alive connection is kept")

	f.StringVar(&cfg.TLSListen, "tls-listen", "127.0.0.1:8443", "address for HTTPS (HTTP/2 and HTTP/1.1), when certificates are given")
	f.StringArrayVar(&certs, "tls-cert", nil, "PEM certificate chain, repeatable; picked by SNI, the first is the default; reloaded when it changes")
	f.StringArrayVar(&keys, "tls-key", nil, "PEM private key of the --tls-cert at the same position")
	f.StringArrayVar(&cfg.ACME.Domains, "acme-domain", nil, "get and renew a certificate for this domain from an ACME CA (Let's Encrypt), repeatable")
	f.StringVar(&cfg.ACME.Email, "acme-email", "", "contact address for the ACME account")
	f.StringVar(&cfg.ACME.CacheDir, "acme-cache", "", "directory keeping ACME certificates and the account key across restarts")
	f.StringVar(&cfg.ACME.DirectoryURL, "acme-directory", "", "ACME directory URL (default Let's Encrypt production)")

	f.StringArrayVar(&proxy, "trusted-proxy", nil, "CIDR or IP of a proxy in front whose X-Forwarded-* headers are kept and whose Switchyard-Color: blue|green sends a request to that color, repeatable")
	f.DurationVar(&streamGrace, "stream-grace", 30*time.Second, "how long streams (WebSocket, SSE, gRPC) of an instance that left the UP set go on; 0 = end them at once")
	f.DurationVar(&cfg.DrainTimeout, "drain-timeout", 30*time.Second, "longest graceful shutdown: requests in flight finish, streams are ended")
	f.StringVar(&accessLog, "access-log", "stdout", "stdout, stderr, a file PATH (reopened on SIGHUP) or off")
	f.StringVar(&accessFormat, "access-log-format", "json", "json or common")
	f.BoolVar(&cfg.NoFastPath, "no-fast-path", false, "send every HTTP/1.1 request through net/http's transport (debugging)")
	f.BoolVar(&cfg.NoEngine, "no-engine", false, "serve every HTTP/1.1 request with net/http's server instead of the gateway's own engine for GET and HEAD (comparison, debugging)")
	f.IntVar(&accessRate, "access-log-rate", 0, "most access log lines per second, the rest dropped and counted (0 = no limit)")
	return cmd
}

// reload is SIGHUP: the config file again (a bad one changes nothing), the
// certificates, and a fresh access log file after rotation. previewFromFile
// says the preview listener's address came from the file, so that a change
// of it there is worth a warning.
func reload(gw *gateway.Gateway, configFile string, previewFromFile bool, c *common) {
	c.log.Info("SIGHUP: reloading")
	if configFile != "" {
		fc, err := gateway.LoadConfig(configFile)
		if err == nil {
			err = gw.SetRoutes(fc.Routes)
		}
		if err != nil {
			c.log.WithError(err).Error("config not reloaded; the last good one keeps serving")
		} else {
			c.log.WithField("routes", len(fc.Routes)).Info("config reloaded")
			if previewFromFile && fc.PreviewListen != gw.PreviewListen() {
				c.log.WithField("preview_listen", fc.PreviewListen).Warn("preview_listen changed in the config; a reload does not move a listener, restart the gateway to apply it")
			}
		}
	}
	if err := gw.Reload(); err != nil {
		c.log.WithError(err).Error("reload incomplete")
	}
}

// parsePrefix reads a CIDR, or an IP as a one-address prefix.
func parsePrefix(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		return p.Masked(), err
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()), nil
}
