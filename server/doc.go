// Package server wires credgw's packages into the running gateway: the gRPC
// services over TLS with authorization by role, interceptors (panic
// recovery, request logging, metrics, deadlines, error mapping), health and
// reflection, and the plain-HTTP listener for /healthz and /metrics.
//
// Domain packages never import server; handlers here stay thin.
package server
