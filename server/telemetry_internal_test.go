package server

import (
	"context"
	"strings"
	"testing"

	"go.opentelemetry.io/otel"
)

// TestTelemetryConfigValidation: the telemetry section's fields are
// checked, each named.
func TestTelemetryConfigValidation(t *testing.T) {
	base := "tls: {cert_file: a, key_file: b}\npiv: {trust_anchor_files: [a]}\n"
	for _, tc := range []struct{ name, yaml, want string }{
		{"none", base, ""},
		{"grpc", base + "telemetry: {otlp_endpoint: 127.0.0.1:4317, protocol: grpc, insecure: true, sample_ratio: 0.25, service_name: credgw-a}\n", ""},
		{"url", base + "telemetry: {otlp_endpoint: 'https://collector.example:4318', protocol: http/protobuf}\n", ""},
		{"protocol", base + "telemetry: {protocol: thrift}\n", "telemetry.protocol"},
		{"exporter", base + "telemetry: {exporter: zipkin}\n", "telemetry.exporter"},
		{"endpoint", base + "telemetry: {otlp_endpoint: collector}\n", "telemetry.otlp_endpoint"},
		{"credentials in the URL", base + "telemetry: {otlp_endpoint: 'https://user:pw@collector:4318'}\n", "no credentials"},
		{"credentials in another scheme", base + "telemetry: {otlp_endpoint: 'grpc://user:s3cr3tpw@collector:4317'}\n", "telemetry.otlp_endpoint"},
		{"ratio", base + "telemetry: {sample_ratio: 1.5}\n", "telemetry.sample_ratio"},
		{"unknown field", base + "telemetry: {endpoint: x}\n", "endpoint"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseConfig([]byte(tc.yaml), t.TempDir())
			if tc.want == "" && err != nil {
				t.Fatalf("refused: %v", err)
			}
			if tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
				t.Fatalf("err = %v, want it to say %q", err, tc.want)
			}
			if err != nil && (strings.Contains(err.Error(), "s3cr3tpw") || strings.Contains(err.Error(), ":pw@")) {
				t.Fatalf("the refusal shows the endpoint's password: %v", err)
			}
		})
	}
}

// TestTracingPrecedence: tracing is on only when an exporter is known,
// from the config or the OTEL_* environment; a config field wins over the
// environment; the global provider is restored at shutdown.
func TestTracingPrecedence(t *testing.T) {
	for _, v := range []string{"OTEL_SDK_DISABLED", "OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT",
		"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_SERVICE_NAME"} {
		t.Setenv(v, "")
	}
	before := otel.GetTracerProvider()
	on := func(tc TelemetryConfig, env map[string]string) (bool, error) {
		t.Helper()
		for k, v := range env {
			t.Setenv(k, v)
		}
		defer func() {
			for k := range env {
				t.Setenv(k, "")
			}
		}()
		tr, err := newTracing(context.Background(), &Config{GatewayID: "gw", Telemetry: tc})
		if err != nil || tr == nil {
			return false, err
		}
		if otel.GetTracerProvider() != tr.tp {
			t.Error("the provider is not the global one")
		}
		if err := tr.shutdown(context.Background()); err != nil {
			t.Error(err)
		}
		if otel.GetTracerProvider() != before {
			t.Error("shutdown did not restore the global provider")
		}
		return true, nil
	}
	for _, tc := range []struct {
		name string
		cfg  TelemetryConfig
		env  map[string]string
		want bool
		err  string
	}{
		{name: "nothing", want: false},
		{name: "config endpoint", cfg: TelemetryConfig{OTLPEndpoint: "127.0.0.1:4317", Protocol: "grpc", Insecure: true}, want: true},
		{name: "env endpoint", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, want: true},
		{name: "env exporter", env: map[string]string{"OTEL_TRACES_EXPORTER": "otlp"}, want: true},
		{name: "config none wins", cfg: TelemetryConfig{Exporter: "none"}, env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, want: false},
		{name: "env none", env: map[string]string{"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, want: false},
		{name: "config exporter wins over env none", cfg: TelemetryConfig{Exporter: "otlp"}, env: map[string]string{"OTEL_TRACES_EXPORTER": "none"}, want: true},
		{name: "env protocol", cfg: TelemetryConfig{OTLPEndpoint: "127.0.0.1:4317"}, env: map[string]string{"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, want: true},
		{name: "env bad protocol", cfg: TelemetryConfig{OTLPEndpoint: "127.0.0.1:4317"}, env: map[string]string{"OTEL_EXPORTER_OTLP_PROTOCOL": "thrift"}, err: "thrift"},
		{name: "config protocol wins", cfg: TelemetryConfig{OTLPEndpoint: "127.0.0.1:4317", Protocol: "grpc"}, env: map[string]string{"OTEL_EXPORTER_OTLP_PROTOCOL": "thrift"}, want: true},
		{name: "unsupported exporter", env: map[string]string{"OTEL_TRACES_EXPORTER": "zipkin"}, err: "OTLP only"},
		{name: "sdk disabled", cfg: TelemetryConfig{OTLPEndpoint: "127.0.0.1:4317"}, env: map[string]string{"OTEL_SDK_DISABLED": "true"}, want: false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := on(tc.cfg, tc.env)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want it to say %q", err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("tracing on = %v (%v), want %v", got, err, tc.want)
			}
		})
	}
}
