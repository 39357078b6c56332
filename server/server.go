package server

import (
	"context"
	"crypto/tls"
	"encoding/asn1"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/credgw/credgw/activation"
	"github.com/credgw/credgw/activation/audit"
	"github.com/credgw/credgw/activation/lifecycle"
	"github.com/credgw/credgw/activation/notify"
	"github.com/credgw/credgw/issuance"
	"github.com/credgw/credgw/piv"
	"github.com/credgw/credgw/piv/session"
	"github.com/credgw/credgw/portal"
	credgwv1 "github.com/credgw/credgw/proto/credgw/v1"
	"github.com/credgw/credgw/store"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"
)

// Server is a running credgw gateway.
type Server struct {
	cfg      *Config
	log      *slog.Logger
	now      func() time.Time
	store    store.Store
	ownStore bool
	// given are listeners bound by the caller (WithListeners).
	given     map[string]net.Listener
	verifier  *piv.Verifier
	live      atomic.Pointer[live] // what a reload replaces
	pin       *tlsPin              // what devices pin, read at start (nil: no CA)
	level     *slog.LevelVar       // log.level, when a reload may change it
	tlsConfig *tls.Config
	metrics   *metrics
	health    *health.Server
	hsm       *hsm
	ca        *issuance.CA
	escrow    *issuance.Escrow
	admission *admission
	limits    *limiter
	tracing   *tracing // nil: nothing is traced

	// The application services the handlers call.
	audit      *audit.Log
	outbox     *notify.Outbox
	sessions   *session.Service
	activation *activation.Service // nil without a CA
	lifecycle  *lifecycle.Service  // nil without a CA

	grpc      *grpc.Server
	https     []*httpListener // listen.http, listen.management, the webhook's
	grpcLn    net.Listener
	grpcConns *perSourceListener // grpcLn, for the stream deadline
	portal    *http.Server
	portalLn  net.Listener
	ready     atomic.Bool // serving, not shutting down (/readyz)
	wg        sync.WaitGroup
	serveErr  chan error
	sweepStop chan struct{}

	// Streams open to anyone, each kind within limits.max_watch_streams.
	watches     streamLimit // Health/Watch
	reflections streamLimit // ServerReflectionInfo

	// bgCtx ends at shutdown, so background work stops with the server.
	bgCtx    context.Context
	bgCancel context.CancelFunc
}

func (s *Server) sweep() {
	defer s.wg.Done()
	t := time.NewTicker(lifecycle.SweepInterval)
	defer t.Stop()
	for {
		select {
		case <-s.sweepStop:
			return
		case <-t.C:
			s.Sweep(s.bgCtx)
		}
	}
}

// linkage runs the linkage checks that are due, every minute, each run
// within lifecycle.LinkageRunBudget: apart from the sweep, whose minute
// they shared, so that a slow responder holds neither the sweep's work nor
// (with linkage.concurrency) the other cards' checks.
func (s *Server) linkage() {
	defer s.wg.Done()
	t := time.NewTicker(linkageTick)
	defer t.Stop()
	for {
		select {
		case <-s.sweepStop:
			return
		case <-t.C:
			ctx, cancel := context.WithTimeout(s.bgCtx, lifecycle.LinkageRunBudget)
			if res, err := s.lifecycle.Linkage(ctx); err != nil && s.bgCtx.Err() == nil {
				s.log.WarnContext(ctx, "linkage checks", "err", err)
			} else if res.Checked > 0 {
				s.log.InfoContext(ctx, "linkage checks", "checked", res.Checked, "good", res.Good, "unknown", res.Unknown, "revoked_cards", res.Revoked)
			}
			cancel()
		}
	}
}

// linkageTick is how often a replica looks for due linkage checks.
const linkageTick = time.Minute

// keepLeases renews this process's claims on the redemptions it issues,
// and releases those of dead processes (activation.KeepLeases).
func (s *Server) keepLeases() {
	defer s.wg.Done()
	t := time.NewTicker(activation.LeaseRenewal)
	defer t.Stop()
	for {
		select {
		case <-s.sweepStop:
			return
		case <-t.C:
			ctx, cancel := context.WithTimeout(s.bgCtx, activation.LeaseRenewal)
			if err := s.activation.KeepLeases(ctx); err != nil && s.bgCtx.Err() == nil {
				s.log.ErrorContext(ctx, "renewing redemption leases", "cause", err.Error())
			}
			cancel()
		}
	}
}

// Sweep does the periodic clean-up once (lifecycle.Sweep): expired PIV
// sessions and challenges, what fell due, the CRLs. (The linkage checks
// run on their own: Linkage.)
func (s *Server) Sweep(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	s.sessions.Sweep(ctx)
	if s.lifecycle != nil {
		s.lifecycle.Sweep(ctx)
	}
}

// sweepDue ends what fell due; Start runs it before serving.
func (s *Server) sweepDue(ctx context.Context) {
	s.sessions.Sweep(ctx)
	if s.lifecycle != nil {
		s.lifecycle.SweepDue(ctx)
	}
}

// LinkageResult counts one linkage run.
type LinkageResult = lifecycle.LinkageResult

// Linkage runs the linkage checks that are due, once (lifecycle.Linkage).
func (s *Server) Linkage(ctx context.Context) (LinkageResult, error) {
	if s.lifecycle == nil {
		return LinkageResult{}, nil
	}
	return s.lifecycle.Linkage(ctx)
}

// DeliverNotifications sends what is due in the outbox, once.
func (s *Server) DeliverNotifications(ctx context.Context) (sent, failed int, err error) {
	return s.outbox.Deliver(ctx)
}

// Option changes how New builds the server.
type Option func(*options)

type options struct {
	log        *slog.Logger
	now        func() time.Time
	store      store.Store
	httpClient *http.Client
	extra      []func(*grpc.Server)
	listeners  map[string]net.Listener
	level      *slog.LevelVar
}

// WithLogger sets the logger (default: JSON to stderr at the configured level).
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.log = l } }

// WithClock sets the clock (tests inject one).
func WithClock(now func() time.Time) Option { return func(o *options) { o.now = now } }

// WithStore uses s instead of opening the configured store; the caller
// closes it.
func WithStore(s store.Store) Option { return func(o *options) { o.store = s } }

// WithHTTPClient sets the client for OCSP and CRL fetches.
func WithHTTPClient(c *http.Client) Option { return func(o *options) { o.httpClient = c } }

// WithListeners serves on listeners bound already, by the name of their
// setting ("listen.grpc", "listen.http", "portal.listen"), instead of
// binding the configured addresses: sockets inherited from systemd
// (InheritedListeners), or bound by a test in one step with the port it
// put in the config. Start takes ownership of them.
func WithListeners(ls map[string]net.Listener) Option {
	return func(o *options) { o.listeners = ls }
}

// WithServices registers extra services on the gRPC server (tests).
func WithServices(register func(*grpc.Server)) Option {
	return func(o *options) { o.extra = append(o.extra, register) }
}

// New builds the server from cfg: TLS material, trust anchors, store.
func New(ctx context.Context, cfg *Config, opts ...Option) (*Server, error) {
	o := options{now: time.Now}
	for _, opt := range opts {
		opt(&o)
	}
	if o.log == nil {
		o.log = NewLogger(io.Discard, cfg.Log.Level)
	}
	// Log lines written within a traced call carry its trace_id, span_id.
	o.log = slog.New(withTraceIDs(o.log.Handler()))
	s := &Server{cfg: cfg, log: o.log, now: o.now, metrics: newMetrics(), serveErr: make(chan error, 2), given: o.listeners, level: o.level}
	s.admission = newAdmission(cfg.Limits.NewWork, s.metrics.admissionWaiting)
	s.limits = newLimiter(cfg.Limits.Rates, cfg.PIV.ChallengeTTL.Duration, func() time.Time { return s.now() })

	pin, err := cfg.readTLSPin()
	if err != nil {
		return nil, err
	}
	s.pin = pin
	l, err := loadLive(cfg, pin)
	if err != nil {
		return nil, err
	}
	s.live.Store(l)
	l.warnStaleCRLs(s.log)
	minVersion := uint16(tls.VersionTLS12)
	if cfg.TLS.MinVersion == "1.3" {
		minVersion = tls.VersionTLS13
	}
	s.tlsConfig = &tls.Config{
		// The certificate of the newest reload (SIGHUP).
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return s.live.Load().cert, nil },
		MinVersion:     minVersion,
		// Client certificates are requested, not required: Redemption is
		// open. Roles and PIV certificates are verified per method by the
		// authorization interceptor. The handshake still proves possession
		// of the presented certificate's key.
		ClientAuth: tls.RequestClientCert,
		NextProtos: []string{"h2"},
	}

	policies := make([]asn1OID, 0, len(cfg.PIV.Policies))
	for _, p := range cfg.PIV.Policies {
		oid, _ := parseOID(p) // validated with the config
		policies = append(policies, oid)
	}
	s.verifier, err = piv.NewVerifier(piv.Options{
		// A sign-in gives its admission slot back while OCSP and CRL
		// fetches are on the network.
		Roots: l.anchors, Intermediates: l.inter, Policies: policies, HTTPClient: yieldingClient(o.httpClient), NetworkWait: networkWait,
		OCSPTimeout: cfg.PIV.OCSPTimeout.Duration, CRLTimeout: cfg.PIV.CRLTimeout.Duration, MaxStatusAge: cfg.PIV.MaxStatusAge.Duration,
		PersonAttribute: cfg.PIV.PersonAttribute, Now: o.now,
		StatusFetchFailed: func(source string) { s.metrics.statusFetches.WithLabelValues(source).Inc() },
	})
	if err != nil {
		return nil, err
	}
	if o.store != nil {
		s.store = o.store
	} else {
		st, err := OpenStore(ctx, cfg, cfg.Store.MigrateOnStart)
		if err != nil {
			return nil, err
		}
		s.store, s.ownStore = st, true
		// A replica left on an older release after another migrated the
		// schema (a rolling upgrade, a rollback) serves, but says so.
		if cur, want, err := st.SchemaVersion(ctx); err == nil && cur > want {
			s.log.Warn("the database schema is newer than this credgw: a newer credgw migrated it; upgrade this replica (credgw does not migrate down)",
				"schema_version", cur, "this_build", want)
		}
	}
	if c, ok := s.store.(interface{ CheckpointFailures() int64 }); ok && cfg.Store.Driver == "sqlite" {
		s.metrics.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "credgw_sqlite_checkpoint_failures_total",
			Help: "Background SQLite WAL checkpoints that failed or were blocked; a steady rise means the WAL file grows.",
		}, func() float64 { return float64(c.CheckpointFailures()) }))
	}
	if c, ok := s.store.(interface{ WALBytes() int64 }); ok && cfg.Store.Driver == "sqlite" {
		s.metrics.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "credgw_sqlite_wal_bytes",
			Help: "Size of the SQLite WAL file; the store keeps it below store.DefaultWALLimit (64 MiB) unless checkpoints fail.",
		}, func() float64 { return float64(c.WALBytes()) }))
	}
	if c, ok := s.store.(interface{ GroupCommits() (int64, int64) }); ok && cfg.Store.Driver == "sqlite" {
		s.metrics.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "credgw_sqlite_group_commits_total",
			Help: "SQLite transactions that committed grouped writes (issuance intents and records, audit events).",
		}, func() float64 { n, _ := c.GroupCommits(); return float64(n) }))
		s.metrics.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "credgw_sqlite_group_writes_total",
			Help: "Grouped writes those transactions carried; divided by credgw_sqlite_group_commits_total, the mean group size.",
		}, func() float64 { _, n := c.GroupCommits(); return float64(n) }))
	}
	if c, ok := s.store.(interface{ CheckpointLag() int64 }); ok && cfg.Store.Driver == "sqlite" {
		s.metrics.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "credgw_sqlite_checkpoint_lag_frames",
			Help: "WAL frames the last SQLite checkpoint could not copy into the database (readers held them).",
		}, func() float64 { return float64(c.CheckpointLag()) }))
	}

	if s.tracing, err = newTracing(ctx, cfg); err != nil {
		s.closeResources()
		return nil, err
	}
	if err := s.newServices(ctx, o); err != nil {
		s.closeResources()
		return nil, err
	}
	s.registerServiceGauges()

	s.watches.max = int64(cfg.Limits.MaxWatchStreams)
	s.reflections.max = int64(cfg.Limits.MaxWatchStreams)
	s.watches.perSource = cfg.Limits.MaxWatchStreamsPerSource
	s.reflections.perSource = cfg.Limits.MaxWatchStreamsPerSource
	s.grpc = grpc.NewServer(append(s.tracing.grpcOptions(),
		grpc.Creds(credentials.NewTLS(s.tlsConfig)),
		grpc.MaxRecvMsgSize(cfg.Limits.MaxRecvBytes),
		grpc.MaxConcurrentStreams(uint32(cfg.Limits.MaxStreamsPerConn)),
		// Per connection, a slow client holds the transport's buffers
		// for as long as it stays (credgw bench slow, docs/deploy.md).
		// Requests are small and TLS already holds the record being
		// read, decrypted: the framer reads from it directly, without a
		// read buffer of its own (32 KiB by default, then 4; at 10,000
		// held connections every KiB is 10 MiB of live heap the
		// collector marks). The write buffer goes back to a pool
		// between flushes (gRPC's default now).
		grpc.ReadBufferSize(grpcReadBuffer),
		// The TLS handshake and the HTTP/2 preface.
		grpc.ConnectionTimeout(cfg.Limits.HTTPReadHeaderTimeout.Duration),
		grpc.KeepaliveParams(keepalive.ServerParameters{
			MaxConnectionIdle: cfg.Limits.GRPCIdleTimeout.Duration,
			// GOAWAY at this age; what still runs then has stream_timeout.
			MaxConnectionAge:      cfg.Limits.GRPCMaxConnectionAge.Duration,
			MaxConnectionAgeGrace: cfg.Limits.StreamTimeout.Duration,
			// A peer that acknowledges no ping (gone, or reading nothing)
			// is closed.
			Time: keepaliveTime, Timeout: keepaliveTimeout,
		}),
		// Clients may ping every keepaliveMinPing while calls run; more
		// often, or on an idle connection, is answered with GOAWAY.
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: keepaliveMinPing}),
		grpc.ChainUnaryInterceptor(s.unaryInterceptors()...),
		grpc.ChainStreamInterceptor(s.streamInterceptors()...),
	)...)
	credgwv1.RegisterPIVAuthServer(s.grpc, &pivAuthService{s: s})
	credgwv1.RegisterEnrollmentServer(s.grpc, &enrollmentService{s: s})
	credgwv1.RegisterRedemptionServer(s.grpc, &redemptionService{s: s})
	credgwv1.RegisterRenewalServer(s.grpc, &renewalService{s: s})
	credgwv1.RegisterAdminServer(s.grpc, &adminService{s: s})
	for _, register := range o.extra {
		register(s.grpc)
	}
	s.health = health.NewServer()
	healthpb.RegisterHealthServer(s.grpc, s.health)
	reflection.Register(s.grpc)
	s.metrics.grpc.InitializeMetrics(s.grpc)
	return s, nil
}

// grpcReadBuffer is the gRPC transport's read buffer per connection:
// none (grpc.ReadBufferSize: zero reads the connection directly).
const grpcReadBuffer = 0

// Keepalive: the server pings a connection quiet for keepaliveTime and
// closes it if the ping is not acknowledged within keepaliveTimeout.
const (
	keepaliveTime    = time.Minute
	keepaliveTimeout = 20 * time.Second
	keepaliveMinPing = 20 * time.Second
)

type asn1OID = asn1.ObjectIdentifier

// httpServer bounds what a slow or idle client holds on an HTTP listener
// (the limits.http_* timeouts).
func (s *Server) httpServer(h http.Handler) *http.Server {
	l := s.cfg.Limits
	return &http.Server{Handler: h, ReadHeaderTimeout: l.HTTPReadHeaderTimeout.Duration, ReadTimeout: l.HTTPReadTimeout.Duration,
		WriteTimeout: l.HTTPWriteTimeout.Duration, IdleTimeout: l.HTTPIdleTimeout.Duration,
		// Handshake failures and the like: a client's doing, not the
		// gateway's (debug level, not stderr).
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelDebug)}
}

// listen binds addr (or takes the listener given for name) with the
// per-source connection limit.
func (s *Server) listen(name, addr string) (*perSourceListener, error) {
	ln, ok := s.given[name]
	if !ok {
		var err error
		if ln, err = net.Listen("tcp", addr); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
	}
	return limitPerSource(ln, s.cfg.Limits.MaxConnsPerSource, s.cfg.Limits.SourcePrefixV6, s.metrics.connsRefused.WithLabelValues(name)), nil
}

func paths(cfg *Config, in []string) []string {
	out := make([]string, len(in))
	for i, p := range in {
		out[i] = cfg.Path(p)
	}
	return out
}

// Start binds the listeners and serves in the background.
func (s *Server) Start() error {
	var err error
	catchUp, cancel := context.WithTimeout(context.Background(), time.Minute)
	if s.activation != nil && s.cfg.Store.Driver == "sqlite" {
		// The only process of an embedded store: every redemption claimed
		// without a package was being issued by a process that is gone
		// (a crash, kill -9). Give them back before devices retry.
		if n, err := s.activation.ReleaseAll(catchUp); err != nil {
			s.log.Error("releasing the redemptions of the previous run", "released", n, "cause", err.Error())
		} else if n > 0 {
			s.log.Warn("released the redemptions the previous run left issuing", "released", n)
		}
	}
	s.sweepDue(catchUp)
	cancel()
	if s.grpcConns, err = s.listen("listen.grpc", s.cfg.Listen.GRPC); err != nil {
		return err
	}
	s.grpcLn = s.grpcConns
	if err := s.startHTTP(); err != nil {
		s.grpcLn.Close()
		return err
	}
	if s.cfg.Portal.Listen != "" {
		if err := s.startPortal(); err != nil {
			s.grpcLn.Close()
			for _, h := range s.https {
				h.srv.Close()
			}
			return err
		}
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := s.grpc.Serve(s.grpcLn); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			s.serveErr <- err
		}
	}()
	s.sweepStop = make(chan struct{})
	s.bgCtx, s.bgCancel = context.WithCancel(context.Background())
	s.wg.Add(1)
	go s.sweep()
	if s.lifecycle != nil {
		s.wg.Add(1)
		go s.linkage()
	}
	if s.activation != nil {
		s.wg.Add(1)
		go s.keepLeases()
	}
	if s.outbox.Enabled() {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.outbox.Run(s.bgCtx)
		}()
	}
	s.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	s.ready.Store(true)
	for _, l := range s.listenerList() {
		if l.addr == "" {
			s.log.Info("listener off", "listener", l.name, "serves", l.serves, "enable_with", l.setting)
			continue
		}
		s.log.Info("listening", "listener", l.name, "address", l.addr, "serves", l.serves)
	}
	s.log.Info("credgw serving", "grpc", s.grpcLn.Addr().String(), "http", s.HTTPAddr(), "management", s.ManagementAddr(),
		"webhook", s.WebhookAddr(), "portal", s.PortalAddr(), "gateway_id", s.cfg.GatewayID)
	return nil
}

// listenerInfo is one listener as the start-up log names it.
type listenerInfo struct{ name, addr, serves, setting string }

// listenerList is every listener the gateway may serve, bound or off.
func (s *Server) listenerList() []listenerInfo {
	webhook := "POST /v1/webhooks/termination (signed)"
	if s.cfg.Webhook.SecretFile != "" && s.httpAddr("termination_webhook.listen") == "" {
		webhook += ", on the management listener"
	}
	return []listenerInfo{
		{"grpc", s.GRPCAddr(), "the gRPC API over TLS: PIVAuth, Enrollment, Redemption, Renewal, Admin", "listen.grpc"},
		{"public", s.HTTPAddr(), "plain HTTP for relying parties: OCSP, CRLs, CA certificates", "listen.http"},
		{"management", s.ManagementAddr(), "plain HTTP for operators: /healthz, /readyz, /metrics", "listen.management"},
		{"webhook", s.WebhookAddr(), webhook, "termination_webhook.secret_file"},
		{"portal", s.PortalAddr(), "HTTPS self-service portal (card sign-in by TLS client certificate)", "portal.listen"},
	}
}

// startPortal serves the portal over HTTPS; the browser's TLS client
// certificate is the sign-in.
func (s *Server) startPortal() error {
	key, err := portalCSRFKey(s.cfg)
	if err != nil {
		return err
	}
	p, err := portal.New(portalBackend{s: s}, s.log, key)
	if err != nil {
		return err
	}
	base := s.tlsConfig.Clone()
	base.NextProtos = []string{"h2", "http/1.1"}
	// The portal's proof of the card is the TLS handshake itself. A
	// resumed session hands back the certificate of an earlier handshake
	// with no signature by the card, so a browser whose card was pulled
	// out would still sign in: every connection makes a full handshake.
	// (gRPC sign-ins need no such rule: the card signs their challenge.)
	base.SessionTicketsDisabled = true
	tc := base.Clone()
	// The PIV issuers of the newest reload go into each CertificateRequest.
	tc.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		c := base.Clone()
		c.ClientCAs = s.live.Load().pivIssuers
		return c, nil
	}
	ln, err := s.listen("portal.listen", s.cfg.Portal.Listen)
	if err != nil {
		return err
	}
	s.portalLn = ln
	// What the portal records in the audit log carries the browser's
	// address.
	pages := p.Handler()
	withSource := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		pages.ServeHTTP(w, r.WithContext(audit.WithCaller(r.Context(), audit.Caller{Source: r.RemoteAddr})))
	})
	s.portal = s.httpServer(s.tracing.handler("portal", portal.SecurityHeaders(s.freshCardProof(withSource))))
	// Connections reach the HTTP server with their handshake done (the
	// card's PIN typed meanwhile, under portal.handshake_timeout), so its
	// connection age counts from there.
	s.portal.ConnContext = s.connOpened
	s.portal.TLSConfig = tc
	hl := newHandshakeListener(ln, tc.Clone(), s.cfg.Limits.HTTPReadHeaderTimeout.Duration, s.cfg.Portal.HandshakeTimeout.Duration, s.log, s.metrics.portalHandshakeFailures)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := s.portal.Serve(hl); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.serveErr <- err
		}
	}()
	return nil
}

// PortalAddr is the bound portal address, or "".
func (s *Server) PortalAddr() string {
	if s.portalLn == nil {
		return ""
	}
	return s.portalLn.Addr().String()
}

// GRPCAddr is the bound gRPC address.
func (s *Server) GRPCAddr() string { return s.grpcLn.Addr().String() }

// HTTPAddr is the bound public HTTP address (listen.http), or "".
func (s *Server) HTTPAddr() string { return s.httpAddr("listen.http") }

// ManagementAddr is the bound management address (listen.management), or "".
func (s *Server) ManagementAddr() string { return s.httpAddr("listen.management") }

// WebhookAddr is where the termination webhook is served (its own
// listener, else the management one), or "".
func (s *Server) WebhookAddr() string {
	if s.cfg.Webhook.SecretFile == "" {
		return ""
	}
	if a := s.httpAddr("termination_webhook.listen"); a != "" {
		return a
	}
	return s.ManagementAddr()
}

func (s *Server) httpAddr(name string) string {
	for _, h := range s.https {
		if h.name == name {
			return h.ln.Addr().String()
		}
	}
	return ""
}

// Errors reports a listener that failed while serving.
func (s *Server) Errors() <-chan error { return s.serveErr }

// Shutdown stops accepting calls, lets running ones finish until ctx or
// limits.shutdown_timeout ends, then stops and closes the store.
func (s *Server) Shutdown(ctx context.Context) error {
	s.ready.Store(false)
	s.health.Shutdown()
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Limits.ShutdownTimeout.Duration)
	defer cancel()
	done := make(chan struct{})
	go func() {
		s.grpc.GracefulStop()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		s.log.WarnContext(ctx, "shutdown timeout: stopping calls still running")
		s.grpc.Stop()
		<-done
	}
	if s.sweepStop != nil {
		close(s.sweepStop)
		s.bgCancel()
	}
	var errs []error
	for _, h := range s.https {
		errs = append(errs, h.srv.Shutdown(ctx))
	}
	if s.portal != nil {
		errs = append(errs, s.portal.Shutdown(ctx))
	}
	s.wg.Wait()
	s.closeResources()
	s.log.InfoContext(ctx, "credgw stopped")
	return errors.Join(errs...)
}

// closeResources stops the escrow key pool, closes HSM tokens and, if
// New opened it, the store.
func (s *Server) closeResources() {
	if s.escrow != nil {
		s.escrow.Close()
	}
	if s.hsm != nil {
		s.hsm.close()
	}
	if s.ownStore {
		if err := s.store.Close(); err != nil {
			s.log.Warn("closing the store", "err", err)
		}
	}
	// Last: the spans of all the above are flushed.
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.Limits.ShutdownTimeout.Duration)
	defer cancel()
	if err := s.tracing.shutdown(ctx); err != nil {
		s.log.WarnContext(ctx, "flushing the traces", "cause", err.Error())
	}
}

// CA returns the issuing CA, or nil when issuance is not configured.
func (s *Server) CA() *issuance.CA { return s.ca }

// NewLogger is credgw's JSON logger at a level name.
func NewLogger(w io.Writer, level string) *slog.Logger {
	return NewLeveledLogger(w, LogLevel(level))
}

// NewLeveledLogger is NewLogger at a level that can change (WithLogLevel).
func NewLeveledLogger(w io.Writer, level slog.Leveler) *slog.Logger {
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level}))
}
