package server

import (
	"context"
	"maps"
	"sync"
	"time"

	"github.com/credgw/credgw/issuance"
	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"google.golang.org/grpc/codes"
)

// metrics are the server's Prometheus collectors, in a registry of its own.
type metrics struct {
	reg      *prometheus.Registry
	rpcs     *prometheus.CounterVec
	duration *prometheus.HistogramVec
	// linkageUnknown counts linkage checks that found the card's status
	// unavailable.
	linkageUnknown prometheus.Counter
	// linkageOverdue is how long the oldest linkage check still due has
	// waited, after this replica's last run.
	linkageOverdue prometheus.Gauge
	// admissionWaiting is how many new-work calls wait for a slot.
	admissionWaiting prometheus.Gauge
	// escrowPoolFailures counts failed key generations in the escrow
	// key pool (each is logged; the pool retries with backoff).
	escrowPoolFailures prometheus.Counter
	// connsRefused counts connections closed at accept because their
	// source held limits.max_conns_per_source already.
	connsRefused *prometheus.CounterVec
	// portalHandshakeFailures counts portal TLS handshakes that failed or
	// outlasted portal.handshake_timeout, by reason.
	portalHandshakeFailures *prometheus.CounterVec

	// grpc are the standard gRPC server metrics (grpc_server_*), by
	// service, method and code.
	grpc *grpcprom.ServerMetrics
	// The domain's: certificates signed and recorded by profile, lint
	// refusals by profile, the CA key's signing latency, failed OCSP and
	// CRL fetches by source, codes locked by wrong passwords.
	issued        *prometheus.CounterVec
	lintRefusals  *prometheus.CounterVec
	hsmSign       prometheus.Histogram
	statusFetches *prometheus.CounterVec
	lockouts      prometheus.Counter
	ocspTryLater  prometheus.Counter
	// statusUnavailable counts status requests unanswered (kind crl, ocsp).
	statusUnavailable *prometheus.CounterVec
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		rpcs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "credgw_grpc_requests_total",
			Help: "gRPC requests handled, by method and status code.",
		}, []string{"method", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "credgw_grpc_request_duration_seconds",
			Help:    "gRPC request latency, by method and status code.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}, []string{"method", "code"}),
		linkageUnknown: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "credgw_linkage_status_unknown_total",
			Help: "Linkage checks that could not learn the PIV card's status (OCSP and CRL unavailable).",
		}),
		linkageOverdue: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "credgw_linkage_overdue_seconds",
			Help: "How long the oldest linkage check still due has waited, after this replica's last linkage run (0: none due).",
		}),
		admissionWaiting: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "credgw_admission_waiting",
			Help: "Calls waiting for an admission slot (limits.new_work) while the gateway is busy: sign-ins (BeginSession, CompleteSession, and those taking their slot back after an OCSP/CRL fetch) and enrollments (CreateEnrollment).",
		}),
		escrowPoolFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "credgw_escrow_pool_failures_total",
			Help: "Key generations that failed in the escrow key pool (escrow.pool_size); the pool retries with backoff and enrollments generate on demand meanwhile.",
		}),
		connsRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "credgw_connections_refused_total",
			Help: "Connections closed as they were accepted because their source address held limits.max_conns_per_source on that listener already, by listener.",
		}, []string{"listener"}),
		portalHandshakeFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "credgw_portal_handshake_failures_total",
			Help: "Portal TLS handshakes that failed (reason error: no usable certificate, a browser that gave up) or outlasted portal.handshake_timeout (reason timeout: the person did not choose the certificate or type the PIN in time).",
		}, []string{"reason"}),
	}
	m.grpc = grpcprom.NewServerMetrics(grpcprom.WithServerHandlingTimeHistogram(
		grpcprom.WithHistogramBuckets(prometheus.ExponentialBuckets(0.0005, 2, 16))))
	m.issued = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "credgw_certificates_issued_total",
		Help: "Certificates signed and recorded, by profile (pivAuth, signature, encryption).",
	}, []string{"profile"})
	m.lintRefusals = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "credgw_lint_refusals_total",
		Help: "Certificates the pre-issuance lint (zlint) refused, by profile: nothing was signed. Any is a defect in a profile or template.",
	}, []string{"profile"})
	m.hsmSign = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "credgw_hsm_sign_seconds",
		Help:    "Time the issuing CA key (the HSM) took per signature: certificates, CRLs, OCSP responses.",
		Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
	})
	m.statusFetches = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "credgw_card_status_fetch_failures_total",
		Help: "OCSP and CRL fetches for PIV cards that failed (unreachable, HTTP error, bad or stale answer), by source (ocsp, crl).",
	}, []string{"source"})
	m.lockouts = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "credgw_activation_lockouts_total",
		Help: "Activation codes locked by too many wrong passwords.",
	})
	m.ocspTryLater = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "credgw_ocsp_try_later_total",
		Help: "OCSP requests answered tryLater because the replica had signed its budget of responses (issuance.OCSPSignRate a second); cached answers are still served.",
	})
	m.statusUnavailable = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "credgw_revocation_status_unavailable_total",
		Help: "Requests for credgw's own CRL (kind crl, answered 503) or OCSP (kind ocsp, answered tryLater or internalError) it could not answer because its store or CA key failed.",
	}, []string{"kind"})
	// Every series exists from the start, at 0 (dashboards and alerts
	// see no gap).
	for _, src := range []string{"ocsp", "crl"} {
		m.statusFetches.WithLabelValues(src)
		m.statusUnavailable.WithLabelValues(src)
	}
	for _, p := range issuance.Profiles() {
		m.issued.WithLabelValues(string(p))
		m.lintRefusals.WithLabelValues(string(p))
	}
	m.reg.MustRegister(m.grpc, m.issued, m.lintRefusals, m.hsmSign, m.statusFetches, m.lockouts, m.ocspTryLater, m.statusUnavailable)
	m.reg.MustRegister(m.rpcs, m.duration, m.linkageUnknown, m.linkageOverdue, m.admissionWaiting, m.escrowPoolFailures, m.connsRefused, m.portalHandshakeFailures, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

func (m *metrics) observe(method string, code codes.Code, d time.Duration) {
	m.rpcs.WithLabelValues(method, code.String()).Inc()
	m.duration.WithLabelValues(method, code.String()).Observe(d.Seconds())
}

// scrapeTimeout bounds the store queries behind a scrape's gauges.
const scrapeTimeout = 2 * time.Second

// scrapeTTL is how long a store-backed gauge's value serves scrapes: the
// store is read at most once per scrapeTTL however many scrapes come (the
// management listener may be reachable by others than Prometheus).
const scrapeTTL = 5 * time.Second

// scrapeRead is a store read behind a gauge, shared by the scrapes of one
// scrapeTTL; concurrent scrapes wait for one read.
type scrapeRead[T any] struct {
	read func(context.Context) (T, error)
	now  func() time.Time

	mu  sync.Mutex
	at  time.Time
	v   T
	err error
}

func newScrapeRead[T any](read func(context.Context) (T, error), now func() time.Time) *scrapeRead[T] {
	return &scrapeRead[T]{read: read, now: now}
}

func (r *scrapeRead[T]) get() (T, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if now := r.now(); r.at.IsZero() || now.Sub(r.at) >= scrapeTTL || now.Before(r.at) {
		ctx, cancel := context.WithTimeout(context.Background(), scrapeTimeout)
		r.v, r.err = r.read(ctx)
		cancel()
		r.at = now
	}
	return r.v, r.err
}

// registerServiceGauges adds the gauges read from the services at each
// scrape: the outbox backlog, the escrow key pool and activations by state.
func (s *Server) registerServiceGauges() {
	m := s.metrics
	backlog := newScrapeRead(s.outbox.Backlog, time.Now)
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "credgw_outbox_backlog",
		Help: "Notifications in the outbox not delivered yet, in the whole store (every replica reports the same: take max, not sum); a steady rise means the SMTP relay or the webhook receiver does not take them.",
	}, func() float64 {
		n, err := backlog.get()
		if err != nil {
			return -1
		}
		return float64(n)
	}))
	if s.escrow != nil {
		m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "credgw_escrow_pool_depth",
			Help: "Pre-generated key-management keys waiting in the escrow key pool (escrow.pool_size at most); 0 under load means enrollments generate on demand.",
		}, func() float64 { return float64(s.escrow.PoolDepth()) }))
	}
	if s.activation != nil {
		m.reg.MustRegister(&activationsCollector{census: newScrapeRead(s.activation.ActivationsByState, time.Now), desc: prometheus.NewDesc("credgw_activations",
			"Activation codes by state (pending, redeeming, completed, locked, expired), in the whole store at each scrape (every replica reports the same: take max, not sum).", []string{"state"}, nil)})
	}
}

// activationStates are reported even when none is in them.
var activationStates = []string{"pending", "redeeming", "completed", "locked", "expired"}

// activationsCollector counts activations by state at each scrape (one
// grouped count in the store).
type activationsCollector struct {
	census *scrapeRead[map[string]int]
	desc   *prometheus.Desc
}

func (c *activationsCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *activationsCollector) Collect(ch chan<- prometheus.Metric) {
	counted, err := c.census.get()
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.desc, err)
		return
	}
	states := maps.Clone(counted) // shared with the next scrapes
	for _, st := range activationStates {
		if _, ok := states[st]; !ok {
			states[st] = 0
		}
	}
	for st, n := range states {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(n), st)
	}
}
