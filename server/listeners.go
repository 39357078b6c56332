package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"github.com/prometheus/client_golang/prometheus"
	"io"
	"net"
	"net/http"
	"net/http/pprof"
	"strings"
	"time"

	"github.com/credgw/credgw/issuance"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// The plain-HTTP listeners, one per audience:
//
//   - listen.http, public: what relying parties fetch from the URLs in the
//     certificates (OCSP, CRLs, CA certificates), nothing else;
//   - listen.management, operators: /healthz, /readyz, /metrics,
//     /debug/pprof/, and the termination webhook unless it has its own;
//   - termination_webhook.listen: the webhook alone, where the identity
//     system reaches it, over TLS when a certificate is configured.
type httpListener struct {
	name string // the setting: listen.http, listen.management, termination_webhook.listen
	ln   net.Listener
	srv  *http.Server
	tls  bool
}

// readyTimeout bounds the store query of /readyz.
const readyTimeout = 2 * time.Second

// startHTTP binds every configured HTTP listener, then serves them. If a
// bind fails, none is left open.
func (s *Server) startHTTP() error {
	var webhookH http.Handler
	if s.cfg.Webhook.SecretFile != "" {
		key, err := loadWebhookKey(s.cfg)
		if err != nil {
			return err
		}
		webhookH = &webhook{s: s, key: key}
	}
	type want struct {
		name, addr string
		h          http.Handler
		tls        *tls.Config
	}
	var wants []want
	if s.cfg.Listen.HTTP != "" {
		wants = append(wants, want{name: "listen.http", addr: s.cfg.Listen.HTTP, h: s.publicHandler()})
	}
	ownWebhook := webhookH != nil && s.cfg.Webhook.Listen != ""
	if s.cfg.Listen.Management != "" {
		var wh http.Handler
		if !ownWebhook {
			wh = webhookH
		}
		wants = append(wants, want{name: "listen.management", addr: s.cfg.Listen.Management, h: s.managementHandler(wh)})
	}
	if ownWebhook {
		mux := http.NewServeMux()
		mux.Handle("POST "+webhookPath, webhookH)
		w := want{name: "termination_webhook.listen", addr: s.cfg.Webhook.Listen, h: mux}
		if s.cfg.Webhook.TLSCertFile != "" {
			// The certificate of the newest reload (SIGHUP).
			w.tls = &tls.Config{MinVersion: tls.VersionTLS12,
				GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return s.live.Load().webhookCert, nil }}
		}
		wants = append(wants, w)
	}
	var bound []*httpListener
	for _, w := range wants {
		ln, err := s.listen(w.name, w.addr)
		if err != nil {
			for _, b := range bound {
				b.ln.Close()
			}
			return err
		}
		srv := s.httpServer(s.tracing.handler(w.name, w.h))
		srv.TLSConfig = w.tls
		bound = append(bound, &httpListener{name: w.name, ln: ln, srv: srv, tls: w.tls != nil})
	}
	s.https = bound
	for _, b := range bound {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			var err error
			if b.tls {
				err = b.srv.ServeTLS(b.ln, "", "")
			} else {
				err = b.srv.Serve(b.ln)
			}
			if err != nil && !errors.Is(err, http.ErrServerClosed) {
				s.serveErr <- fmt.Errorf("%s: %w", b.name, err)
			}
		}()
	}
	return nil
}

// publicHandler serves what the issued certificates point at: CRL DP,
// OCSP (AIA), caIssuers, and the root's CRL and certificate. Anything else
// is 404.
func (s *Server) publicHandler() http.Handler {
	if s.ca == nil {
		return http.NotFoundHandler()
	}
	mux := http.NewServeMux()
	h := s.ca.Handler()
	mux.Handle("/crl/", h)
	mux.Handle("/ca/", h)
	// The root's certificate and CRL (AIA and CRL DP of the self-made
	// issuing CA): more specific patterns than /ca/, /crl/.
	root := s.ca.Chain()[len(s.ca.Chain())-1]
	crl := newRootCRL(s.cfg, root)
	if crl != nil {
		g := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "credgw_root_crl_next_update_timestamp_seconds",
			Help: "nextUpdate of the root's CRL served from ca.root_crl_file (Unix seconds); -1 when the file is missing or not a CRL the root signed. Sign the next (credgw ca root-crl) before it passes.",
		}, crl.nextUpdate)
		if err := s.metrics.reg.Register(g); err != nil && !errors.As(err, new(prometheus.AlreadyRegisteredError)) {
			s.log.Error("registering the root CRL gauge", "err", err)
		}
	}
	rootH := rootHandler(root, crl)
	mux.Handle("GET "+issuance.RootCertPath, rootH)
	mux.Handle("GET "+issuance.RootCRLPath, rootH)
	// OCSP before the mux: a GET's base64 may hold "//", which ServeMux
	// would answer with a redirect to a cleaned path.
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/ocsp/") {
			h.ServeHTTP(w, r)
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// managementHandler serves operators: liveness, readiness, metrics,
// profiles, and the webhook when wh is not nil.
func (s *Server) managementHandler(wh http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("GET /readyz", s.readyz)
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.metrics.reg, promhttp.HandlerOpts{}))
	if s.cfg.Listen.PProf != "off" {
		mux.HandleFunc("/debug/pprof/", s.pprofGuard(pprof.Index))
		mux.HandleFunc("/debug/pprof/cmdline", s.pprofGuard(pprof.Cmdline))
		mux.HandleFunc("/debug/pprof/profile", s.pprofGuard(pprof.Profile))
		mux.HandleFunc("/debug/pprof/symbol", s.pprofGuard(pprof.Symbol))
		mux.HandleFunc("/debug/pprof/trace", s.pprofGuard(pprof.Trace))
	}
	if wh != nil {
		mux.Handle("POST "+webhookPath, wh)
	}
	return mux
}

// pprofGuard serves the profiles to loopback peers only, unless
// listen.pprof is "any": the management listener must be reachable by a
// metrics scraper, and a CPU profile or trace is minutes of work on
// request and shows the process's insides.
func (s *Server) pprofGuard(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if s.cfg.Listen.PProf != "any" {
			host, _, err := net.SplitHostPort(r.RemoteAddr)
			// Behind a proxy on the host (a sidecar, nginx) every client
			// is a loopback peer: a forwarded request is not the host's.
			forwarded := r.Header.Get("Forwarded") != "" || r.Header.Get("X-Forwarded-For") != "" || r.Header.Get("X-Real-IP") != ""
			if ip := net.ParseIP(host); err != nil || ip == nil || !ip.IsLoopback() || forwarded {
				http.Error(w, "profiles are served to loopback peers only (listen.pprof: loopback); use a shell on the host or a port-forward, or set listen.pprof: any",
					http.StatusForbidden)
				return
			}
		}
		h(w, r)
	}
}

// readyz answers 200 while the gateway serves and its store answers, 503
// otherwise (starting, shutting down, database unreachable), so that a
// load balancer sends calls elsewhere.
func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	if !s.ready.Load() {
		http.Error(w, "not ready: starting or shutting down", http.StatusServiceUnavailable)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), readyTimeout)
	defer cancel()
	if err := s.sessions.Ready(ctx); err != nil {
		s.log.WarnContext(ctx, "readiness: the store does not answer", "cause", err.Error())
		http.Error(w, "not ready: the database does not answer", http.StatusServiceUnavailable)
		return
	}
	io.WriteString(w, "ready\n")
}
