// Package server is credgw's transport: the gRPC services over TLS with
// authorization by role, interceptors (panic recovery, request logging,
// metrics, deadlines, admission, error mapping), health and reflection, the
// plain-HTTP listeners by audience (listeners.go: public CRL, OCSP and CA
// certificates; management /healthz, /readyz, /metrics, pprof; the
// termination webhook) and the portal's HTTPS listener, plus loading the config and
// wiring the application services onto the parts.
//
// A handler translates proto to domain, calls one application service
// method (piv/session, activation, activation/lifecycle) and maps the error
// through errors.go. No file here calls the store: the services do
// (docs/architecture.md).
package server
