package gateway

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/crypto/acme"
	"golang.org/x/crypto/acme/autocert"
)

// CertPair is a certificate chain and its private key, both PEM files.
type CertPair struct{ Cert, Key string }

// certPollInterval is how often the certificate files are checked for a
// change. Polling, not inotify: a renewed certificate usually arrives by a
// rename or a symlink swap (Kubernetes secrets, certbot's live/), which a
// watch on the old inode would miss.
const certPollInterval = 2 * time.Second

// certStore holds the certificates of the TLS listener and picks one by
// the client's SNI. It reloads them when a file changes, and on Reload
// (SIGHUP); a pair that fails to load keeps the previous set serving.
type certStore struct {
	pairs []CertPair
	log   logrus.FieldLogger
	set   atomic.Pointer[certSet]

	mu     sync.Mutex // serializes reloads
	stamps []fileStamp
}

// certSet is one loaded generation of certificates, never changed after
// it is built.
type certSet struct {
	exact map[string]*tls.Certificate // lowercase DNS name → certificate
	wild  map[string]*tls.Certificate // "example.com" for a "*.example.com" name
	def   *tls.Certificate            // the first pair: for clients without SNI or an unknown name
}

type fileStamp struct {
	mod  time.Time
	size int64
}

func newCertStore(pairs []CertPair, log logrus.FieldLogger) (*certStore, error) {
	s := &certStore{pairs: pairs, log: log}
	set, stamps, err := loadCertSet(pairs)
	if err != nil {
		return nil, err
	}
	s.set.Store(set)
	s.stamps = stamps
	return s, nil
}

func loadCertSet(pairs []CertPair) (*certSet, []fileStamp, error) {
	set := &certSet{exact: map[string]*tls.Certificate{}, wild: map[string]*tls.Certificate{}}
	var stamps []fileStamp
	for _, p := range pairs {
		for _, f := range []string{p.Cert, p.Key} {
			st, err := stampOf(f)
			if err != nil {
				return nil, nil, err
			}
			stamps = append(stamps, st)
		}
		cert, err := tls.LoadX509KeyPair(p.Cert, p.Key)
		if err != nil {
			return nil, nil, fmt.Errorf("gateway: load TLS pair %s and %s: %w", p.Cert, p.Key, err)
		}
		leaf, err := x509.ParseCertificate(cert.Certificate[0])
		if err != nil {
			return nil, nil, fmt.Errorf("gateway: parse certificate %s: %w", p.Cert, err)
		}
		cert.Leaf = leaf
		if set.def == nil {
			set.def = &cert
		}
		names := leaf.DNSNames
		if len(names) == 0 && leaf.Subject.CommonName != "" {
			names = []string{leaf.Subject.CommonName}
		}
		for _, ip := range leaf.IPAddresses {
			names = append(names, ip.String())
		}
		for _, n := range names {
			n = strings.ToLower(n)
			if suffix, ok := strings.CutPrefix(n, "*."); ok {
				if _, dup := set.wild[suffix]; !dup {
					set.wild[suffix] = &cert
				}
			} else if _, dup := set.exact[n]; !dup {
				set.exact[n] = &cert
			}
		}
	}
	if set.def == nil {
		return nil, nil, errors.New("gateway: no TLS certificate")
	}
	return set, stamps, nil
}

func stampOf(path string) (fileStamp, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return fileStamp{}, fmt.Errorf("gateway: TLS file: %w", err)
	}
	return fileStamp{mod: fi.ModTime(), size: fi.Size()}, nil
}

// GetCertificate picks the certificate for hello's server name: an exact
// name first, then a wildcard one label up, then the first pair.
func (s *certStore) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	set := s.set.Load()
	name := strings.ToLower(strings.TrimSuffix(hello.ServerName, "."))
	if name == "" {
		return set.def, nil
	}
	if c := set.exact[name]; c != nil {
		return c, nil
	}
	if _, parent, ok := strings.Cut(name, "."); ok {
		if c := set.wild[parent]; c != nil {
			return c, nil
		}
	}
	return set.def, nil
}

// Reload loads every pair again. On an error the current set stays.
func (s *certStore) Reload() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	set, stamps, err := loadCertSet(s.pairs)
	if err != nil {
		return err
	}
	s.set.Store(set)
	s.stamps = stamps
	return nil
}

// changed reports whether a file differs from what was loaded.
func (s *certStore) changed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	i := 0
	for _, p := range s.pairs {
		for _, f := range []string{p.Cert, p.Key} {
			st, err := stampOf(f)
			if err != nil || i >= len(s.stamps) || st != s.stamps[i] {
				return true
			}
			i++
		}
	}
	return false
}

// watch reloads the certificates whenever a file changes, until ctx ends.
// A failed load is logged once per distinct change and retried on the
// next one; the last good certificates keep serving.
func (s *certStore) watch(ctx context.Context) {
	t := time.NewTicker(certPollInterval)
	defer t.Stop()
	var lastErr string
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if !s.changed() {
			continue
		}
		if err := s.Reload(); err != nil {
			if err.Error() != lastErr {
				s.log.WithError(err).Error("TLS certificates changed but do not load; still serving the previous ones")
				lastErr = err.Error()
			}
			continue
		}
		lastErr = ""
		s.log.Info("TLS certificates changed on disk; reloaded")
	}
}

// ACME configures automatic certificates from an ACME CA (Let's Encrypt by
// default) for Domains, through golang.org/x/crypto/acme/autocert.
type ACME struct {
	Domains  []string
	Email    string
	CacheDir string // where certificates and the account key are kept
	// DirectoryURL is the CA's directory; empty means Let's Encrypt.
	DirectoryURL string
}

// tlsConfig builds the listener's TLS configuration: TLS 1.2 at least,
// HTTP/2 and HTTP/1.1 by ALPN, certificates from the files and, for the
// ACME domains, from the CA.
func tlsConfig(store *certStore, am *autocert.Manager, acmeDomains []string) *tls.Config {
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: []string{"h2", "http/1.1"},
	}
	cfg.GetCertificate = func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
		name := strings.ToLower(strings.TrimSuffix(hello.ServerName, "."))
		if am != nil && (store == nil || slices.Contains(acmeDomains, name) || slices.Contains(hello.SupportedProtos, acme.ALPNProto)) {
			return am.GetCertificate(hello)
		}
		if store == nil {
			return nil, fmt.Errorf("gateway: no certificate for %q", hello.ServerName)
		}
		return store.GetCertificate(hello)
	}
	if am != nil {
		cfg.NextProtos = append(cfg.NextProtos, acme.ALPNProto)
	}
	return cfg
}

// acmeManager is the autocert manager for a, or nil without domains.
func acmeManager(a ACME) *autocert.Manager {
	if len(a.Domains) == 0 {
		return nil
	}
	m := &autocert.Manager{
		Prompt:     autocert.AcceptTOS,
		HostPolicy: autocert.HostWhitelist(a.Domains...),
		Email:      a.Email,
	}
	if a.CacheDir != "" {
		m.Cache = autocert.DirCache(a.CacheDir)
	}
	if a.DirectoryURL != "" {
		m.Client = &acme.Client{DirectoryURL: a.DirectoryURL}
	}
	return m
}
