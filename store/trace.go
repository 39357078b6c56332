package store

import (
	"context"
	"errors"
	"runtime"
	"strings"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// tracer is the store's, from the global provider: a no-op until the
// gateway installs one (server/telemetry.go).
//
// It is looked up at each span, not kept: the gateway may install and
// replace the global provider after this package is loaded.
func tracer() trace.Tracer { return otel.Tracer("github.com/credgw/credgw/store") }

// startSpan starts a client span for one statement or transaction. Its
// attributes are the database system and the store method that ran it
// (db.operation.name), never the SQL's arguments. The method is looked up
// on the stack only when the span records.
func (c *conn) startSpan(ctx context.Context, kind string) (context.Context, trace.Span) {
	ctx, span := tracer().Start(ctx, "store."+kind, trace.WithSpanKind(trace.SpanKindClient))
	if span.IsRecording() {
		op := callerMethod()
		span.SetName("store." + op)
		span.SetAttributes(attribute.String("db.system", c.system), attribute.String("db.system.name", c.system),
			attribute.String("db.operation.name", op), attribute.String("credgw.store.kind", kind))
	}
	return ctx, span
}

// endSpan ends span, recording err as its status (the error's text only
// says what failed: the store's errors carry no arguments).
func endSpan(span trace.Span, err error) {
	if err != nil && !errors.Is(err, ErrNotFound) {
		span.SetStatus(codes.Error, "store error")
		span.SetAttributes(attribute.String("error.type", errorType(err)))
	}
	span.End()
}

func errorType(err error) string {
	switch {
	case errors.Is(err, ErrNotFound):
		return "not_found"
	case errors.Is(err, ErrConflict):
		return "conflict"
	case errors.Is(err, ErrUnavailable):
		return "unavailable"
	}
	return "other"
}

// callerMethod names the first *DB method on the stack ("CreateChallenge"),
// or "query" when none is found.
func callerMethod() string {
	var pcs [16]uintptr
	n := runtime.Callers(3, pcs[:])
	frames := runtime.CallersFrames(pcs[:n])
	for {
		f, more := frames.Next()
		if i := strings.Index(f.Function, "store.(*DB)."); i >= 0 {
			name := f.Function[i+len("store.(*DB)."):]
			if j := strings.IndexByte(name, '.'); j >= 0 {
				name = name[:j] // a closure: .func1
			}
			if name != "tx" {
				return name
			}
		}
		if !more {
			return "query"
		}
	}
}
