package server

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/stats"
)

// TelemetryConfig is OpenTelemetry tracing. Every field left out is taken
// from the standard OTEL_* environment variables, then from the default;
// a field that is set wins over the environment (docs/config.md,
// docs/deploy.md "Telemetry"). With no exporter and no OTLP endpoint,
// neither here nor in the environment, nothing is traced.
type TelemetryConfig struct {
	// Exporter is "otlp" or "none" (OTEL_TRACES_EXPORTER). Default: otlp
	// when an OTLP endpoint is known, else none.
	Exporter string `yaml:"exporter"`
	// OTLPEndpoint is the collector: host:port, or an http(s) URL
	// (OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, OTEL_EXPORTER_OTLP_ENDPOINT).
	OTLPEndpoint string `yaml:"otlp_endpoint"`
	// Protocol is "grpc" or "http/protobuf"
	// (OTEL_EXPORTER_OTLP_TRACES_PROTOCOL, OTEL_EXPORTER_OTLP_PROTOCOL);
	// default http/protobuf, as the OpenTelemetry specification says.
	Protocol string `yaml:"protocol"`
	// Insecure sends spans without TLS (OTEL_EXPORTER_OTLP_INSECURE; an
	// http:// endpoint is plaintext too).
	Insecure bool `yaml:"insecure"`
	// SampleRatio is the share of new traces sampled, 0 to 1; a call whose
	// caller sampled its trace is sampled too (parent-based). Default: the
	// OTEL_TRACES_SAMPLER and OTEL_TRACES_SAMPLER_ARG variables, else every
	// trace.
	SampleRatio *float64 `yaml:"sample_ratio"`
	// ServiceName is service.name (OTEL_SERVICE_NAME,
	// OTEL_RESOURCE_ATTRIBUTES); default credgw.
	ServiceName string `yaml:"service_name"`
}

// DefaultServiceName is service.name when neither the config nor the
// environment names the service.
const DefaultServiceName = "credgw"

// validateTelemetry checks the telemetry section.
func (c *Config) validateTelemetry(bad func(string, ...any)) {
	t := c.Telemetry
	switch t.Exporter {
	case "", "otlp", "none":
	default:
		bad("telemetry.exporter %q: otlp or none", t.Exporter)
	}
	switch t.Protocol {
	case "", "grpc", "http/protobuf":
	default:
		bad("telemetry.protocol %q: grpc or http/protobuf", t.Protocol)
	}
	if e := t.OTLPEndpoint; e != "" {
		if strings.Contains(e, "://") {
			if u, err := url.Parse(e); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				// Not the value: a URL may carry credentials.
				bad("telemetry.otlp_endpoint: host:port or an http(s) URL, without credentials")
			} else if u.User != nil {
				bad("telemetry.otlp_endpoint: no credentials in the URL (give headers in OTEL_EXPORTER_OTLP_HEADERS)")
			}
		} else if _, _, err := net.SplitHostPort(e); err != nil {
			bad("telemetry.otlp_endpoint %q: host:port or an http(s) URL", e)
		}
	}
	if r := t.SampleRatio; r != nil && (*r < 0 || *r > 1) {
		bad("telemetry.sample_ratio %g: between 0 and 1", *r)
	}
	if len(t.ServiceName) > 255 {
		bad("telemetry.service_name: at most 255 characters")
	}
}

// telemetryEnv reads the environment (tests replace it).
var telemetryEnv = os.Getenv

// firstEnv is the first of the variables that is set.
func firstEnv(names ...string) string {
	for _, n := range names {
		if v := strings.TrimSpace(telemetryEnv(n)); v != "" {
			return v
		}
	}
	return ""
}

// tracing is the gateway's tracer provider, or nil when nothing is traced.
type tracing struct {
	tp   *sdktrace.TracerProvider
	prop propagation.TextMapPropagator
	prev trace.TracerProvider // the global provider before this one
}

// newTracing builds the tracer provider the config and the environment
// describe, and installs it as the global provider (the parts — issuance,
// piv, store — start their spans from it). It returns nil when no
// exporter is configured: then the global provider stays a no-op.
func newTracing(ctx context.Context, cfg *Config) (*tracing, error) {
	t := cfg.Telemetry
	if strings.EqualFold(firstEnv("OTEL_SDK_DISABLED"), "true") {
		return nil, nil
	}
	exporter := t.Exporter
	if exporter == "" {
		exporter = firstEnv("OTEL_TRACES_EXPORTER")
		// OTEL_TRACES_EXPORTER may list several; credgw speaks OTLP.
		if exporter != "" && exporter != "none" {
			if !strings.Contains(","+exporter+",", ",otlp,") {
				return nil, fmt.Errorf("telemetry: OTEL_TRACES_EXPORTER %q: credgw exports traces by OTLP only (otlp or none)", exporter)
			}
			exporter = "otlp"
		}
	}
	endpoint := t.OTLPEndpoint
	envEndpoint := firstEnv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
	if exporter == "" && (endpoint != "" || envEndpoint != "") {
		exporter = "otlp"
	}
	if exporter != "otlp" {
		return nil, nil
	}
	protocol := t.Protocol
	if protocol == "" {
		protocol = firstEnv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")
	}
	if protocol == "" {
		protocol = "http/protobuf"
	}
	var exp sdktrace.SpanExporter
	var err error
	switch protocol {
	case "grpc":
		// The exporter reads the rest of OTEL_EXPORTER_OTLP_* itself
		// (headers, certificates, timeout, compression).
		var opts []otlptracegrpc.Option
		if endpoint != "" {
			if strings.Contains(endpoint, "://") {
				opts = append(opts, otlptracegrpc.WithEndpointURL(endpoint))
			} else {
				opts = append(opts, otlptracegrpc.WithEndpoint(endpoint))
			}
		}
		if t.Insecure {
			opts = append(opts, otlptracegrpc.WithInsecure())
		}
		exp, err = otlptracegrpc.New(ctx, opts...)
	case "http/protobuf":
		var opts []otlptracehttp.Option
		if endpoint != "" {
			if strings.Contains(endpoint, "://") {
				opts = append(opts, otlptracehttp.WithEndpointURL(endpoint))
			} else {
				opts = append(opts, otlptracehttp.WithEndpoint(endpoint))
			}
		}
		if t.Insecure {
			opts = append(opts, otlptracehttp.WithInsecure())
		}
		exp, err = otlptracehttp.New(ctx, opts...)
	default:
		return nil, fmt.Errorf("telemetry: OTLP protocol %q: grpc or http/protobuf", protocol)
	}
	if err != nil {
		return nil, fmt.Errorf("telemetry: %w", err)
	}
	name := t.ServiceName
	if name == "" && firstEnv("OTEL_SERVICE_NAME") == "" && !strings.Contains(telemetryEnv("OTEL_RESOURCE_ATTRIBUTES"), "service.name=") {
		name = DefaultServiceName
	}
	attrs := []attribute.KeyValue{attribute.String("credgw.gateway_id", cfg.GatewayID)}
	if name != "" {
		attrs = append(attrs, attribute.String("service.name", name))
	}
	// The environment's attributes (resource.Default reads
	// OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME), then the config's.
	res, err := resource.Merge(resource.Default(), resource.NewSchemaless(attrs...))
	if err != nil {
		res = resource.NewSchemaless(attrs...)
	}
	opts := []sdktrace.TracerProviderOption{sdktrace.WithBatcher(exp), sdktrace.WithResource(res)}
	if r := t.SampleRatio; r != nil {
		opts = append(opts, sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(*r))))
	}
	// Without WithSampler the SDK reads OTEL_TRACES_SAMPLER(_ARG), and
	// OTEL_BSP_* for the batcher.
	tr := &tracing{
		tp:   sdktrace.NewTracerProvider(opts...),
		prop: propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}),
		prev: otel.GetTracerProvider(),
	}
	otel.SetTracerProvider(tr.tp)
	otel.SetTextMapPropagator(tr.prop)
	return tr, nil
}

// shutdown flushes the spans still batched and ends the exporter; the
// global provider goes back to what it was.
func (t *tracing) shutdown(ctx context.Context) error {
	if t == nil {
		return nil
	}
	if otel.GetTracerProvider() == trace.TracerProvider(t.tp) {
		otel.SetTracerProvider(t.prev)
	}
	return t.tp.Shutdown(ctx)
}

// grpcOptions is the stats handler that traces each call, if tracing.
func (t *tracing) grpcOptions() []grpc.ServerOption {
	if t == nil {
		return nil
	}
	return []grpc.ServerOption{grpc.StatsHandler(otelgrpc.NewServerHandler(
		otelgrpc.WithTracerProvider(t.tp), otelgrpc.WithPropagators(t.prop),
		// Health checks of load balancers are not worth a trace each.
		otelgrpc.WithFilter(func(info *stats.RPCTagInfo) bool {
			return !strings.HasPrefix(info.FullMethodName, "/grpc.health.v1.Health/")
		})))}
}

// handler traces an HTTP listener's requests (span name: the listener's
// name and the route), if tracing. Only the method, route, status and
// addresses are recorded: no header, no body, no query.
func (t *tracing) handler(name string, h http.Handler) http.Handler {
	if t == nil {
		return h
	}
	return otelhttp.NewHandler(h, name, otelhttp.WithTracerProvider(t.tp), otelhttp.WithPropagators(t.prop),
		otelhttp.WithSpanNameFormatter(func(op string, r *http.Request) string {
			if r.Pattern != "" {
				return op + " " + r.Pattern
			}
			return op + " " + r.Method
		}),
		otelhttp.WithFilter(func(r *http.Request) bool {
			return r.URL.Path != "/healthz" && r.URL.Path != "/readyz" && r.URL.Path != "/metrics"
		}))
}

// traceHandler adds trace_id and span_id to the log lines written within a
// traced call (the context's span).
type traceHandler struct{ slog.Handler }

// withTraceIDs wraps h, once.
func withTraceIDs(h slog.Handler) slog.Handler {
	if _, ok := h.(traceHandler); ok {
		return h
	}
	return traceHandler{h}
}

func (h traceHandler) Handle(ctx context.Context, r slog.Record) error {
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		r = r.Clone()
		r.AddAttrs(slog.String("trace_id", sc.TraceID().String()), slog.String("span_id", sc.SpanID().String()))
	}
	return h.Handler.Handle(ctx, r)
}

func (h traceHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return traceHandler{h.Handler.WithAttrs(as)}
}

func (h traceHandler) WithGroup(name string) slog.Handler {
	return traceHandler{h.Handler.WithGroup(name)}
}
