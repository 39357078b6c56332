package server

import (
	"time"

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
	// admissionWaiting is how many new-work calls wait for a slot.
	admissionWaiting prometheus.Gauge
	// escrowPoolFailures counts failed key generations in the escrow
	// key pool (each is logged; the pool retries with backoff).
	escrowPoolFailures prometheus.Counter
	// connsRefused counts connections closed at accept because their
	// source held limits.max_conns_per_source already.
	connsRefused *prometheus.CounterVec
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
	}
	m.reg.MustRegister(m.rpcs, m.duration, m.linkageUnknown, m.admissionWaiting, m.escrowPoolFailures, m.connsRefused, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

func (m *metrics) observe(method string, code codes.Code, d time.Duration) {
	m.rpcs.WithLabelValues(method, code.String()).Inc()
	m.duration.WithLabelValues(method, code.String()).Observe(d.Seconds())
}
