package server_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/credgw/credgw/activation/code"
	hsmsim "github.com/credgw/credgw/hsm-sim"
	credgwv1 "github.com/credgw/credgw/proto/credgw/v1"
	"github.com/credgw/credgw/server"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"go.yaml.in/yaml/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

// otlpReceiver is an OTLP/gRPC trace collector in the test: it keeps what
// it is sent.
type otlpReceiver struct {
	coltracepb.UnimplementedTraceServiceServer
	mu        sync.Mutex
	spans     []*tracepb.Span
	resources [][]*commonpb.KeyValue
}

func (r *otlpReceiver) Export(_ context.Context, req *coltracepb.ExportTraceServiceRequest) (*coltracepb.ExportTraceServiceResponse, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, rs := range req.GetResourceSpans() {
		r.resources = append(r.resources, rs.GetResource().GetAttributes())
		for _, ss := range rs.GetScopeSpans() {
			r.spans = append(r.spans, ss.GetSpans()...)
		}
	}
	return &coltracepb.ExportTraceServiceResponse{}, nil
}

func startOTLPReceiver(t *testing.T) (*otlpReceiver, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &otlpReceiver{}
	srv := grpc.NewServer()
	coltracepb.RegisterTraceServiceServer(srv, r)
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	return r, ln.Addr().String()
}

// anyString is an attribute value as text.
func anyString(v *commonpb.AnyValue) string {
	switch x := v.GetValue().(type) {
	case *commonpb.AnyValue_StringValue:
		return x.StringValue
	case *commonpb.AnyValue_BytesValue:
		return string(x.BytesValue) + hex.EncodeToString(x.BytesValue)
	case *commonpb.AnyValue_ArrayValue:
		var b strings.Builder
		for _, e := range x.ArrayValue.GetValues() {
			b.WriteString(anyString(e) + " ")
		}
		return b.String()
	}
	return v.String()
}

func attr(kvs []*commonpb.KeyValue, key string) string {
	for _, kv := range kvs {
		if kv.GetKey() == key {
			return anyString(kv.GetValue())
		}
	}
	return ""
}

// TestTelemetry runs a gateway that exports its traces to a receiver in
// the test: a PKI-AUTH sign-in, an enrollment and a redemption make spans
// for the gRPC methods, the OCSP fetch, the store, the lint and the HSM
// signatures; no span carries a secret; the call's log line carries the
// trace id the receiver saw; the metrics and the Grafana dashboard's
// queries are on /metrics.
func TestTelemetry(t *testing.T) {
	recv, otlpAddr := startOTLPReceiver(t)
	grpcLn, err := hsmsim.ListenFree()
	if err != nil {
		t.Fatal(err)
	}
	other := *cfg
	other.Listen.GRPC, other.Listen.HTTP, other.Listen.Management, other.Portal.Listen = grpcLn.Addr().String(), "127.0.0.1:0", "127.0.0.1:0", ""
	other.Enroll.GatewayAddress = grpcLn.Addr().String()
	other.Webhook.SecretFile = ""
	other.Store.Driver, other.Store.DSN = "sqlite", filepath.Join(t.TempDir(), "telemetry.db")
	createStore(t, &other)
	ratio := 1.0
	other.Telemetry = server.TelemetryConfig{OTLPEndpoint: otlpAddr, Protocol: "grpc", Insecure: true, SampleRatio: &ratio, ServiceName: "credgw-test"}
	var logs syncBuffer
	s, err := server.New(context.Background(), &other, server.WithClock(now), server.WithLogger(server.NewLogger(&logs, "debug")),
		server.WithListeners(map[string]net.Listener{"listen.grpc": grpcLn}))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	stopped := false
	defer func() {
		if !stopped {
			s.Shutdown(context.Background())
		}
	}()

	pem, err := os.ReadFile(dev.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pem)
	conn, err := grpc.NewClient(s.GRPCAddr(), grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{
		RootCAs: roots, Certificates: []tls.Certificate{keyPair(t, dev.PortalCert, dev.PortalKey)}, MinVersion: tls.VersionTLS12,
	})))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	// Sign in, enroll, redeem: the CA issues.
	sess, err := login(t, conn, newCard(t, hsmsim.CardSpec{Email: "traced@example.com"}))
	if err != nil {
		t.Fatal(err)
	}
	en, err := credgwv1.NewEnrollmentClient(conn).CreateEnrollment(context.Background(), &credgwv1.CreateEnrollmentRequest{
		SessionToken: sess.GetSessionToken(), IdentityName: "Traced phone"})
	if err != nil {
		t.Fatal(err)
	}
	rememberSecret([]byte(en.GetPassword()))
	e := enrolled{resp: en}
	if e.payload, err = code.ParsePayload(en.GetQrPayload()); err != nil {
		t.Fatal(err)
	}
	rememberSecret(e.payload.Secret)
	d, err := readStream(context.Background(), credgwv1.NewRedemptionClient(conn), redeemRequest(t, e, en.GetPassword()), 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(d.pkg) == 0 {
		t.Fatal("the redemption sent no package")
	}

	// The metrics, on the management listener.
	code, metrics := fetchHTTP(t, "GET", s.ManagementAddr(), "/metrics")
	if code != 200 {
		t.Fatalf("/metrics: %d", code)
	}
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`(?m)^grpc_server_handled_total\{grpc_code="OK",grpc_method="BeginSession",grpc_service="credgw.v1.PIVAuth",grpc_type="unary"\} 1$`),
		regexp.MustCompile(`(?m)^grpc_server_handling_seconds_bucket\{grpc_method="CompleteSession",grpc_service="credgw.v1.PIVAuth",grpc_type="unary",le="\+Inf"\} 1$`),
		regexp.MustCompile(`(?m)^grpc_server_handled_total\{grpc_code="OK",grpc_method="Redeem",grpc_service="credgw.v1.Redemption",grpc_type="server_stream"\} 1$`),
		regexp.MustCompile(`(?m)^credgw_certificates_issued_total\{profile="derived-piv-auth"\} 1$`),
		regexp.MustCompile(`(?m)^credgw_certificates_issued_total\{profile="digital-signature"\} 1$`),
		regexp.MustCompile(`(?m)^credgw_lint_refusals_total\{profile="derived-piv-auth"\} 0$`),
		regexp.MustCompile(`(?m)^credgw_hsm_sign_seconds_count [1-9][0-9]*$`),
		regexp.MustCompile(`(?m)^credgw_card_status_fetch_failures_total\{source="ocsp"\} 0$`),
		regexp.MustCompile(`(?m)^credgw_card_status_fetch_failures_total\{source="crl"\} 0$`),
		regexp.MustCompile(`(?m)^credgw_outbox_backlog [0-9]+$`),
		regexp.MustCompile(`(?m)^credgw_escrow_pool_depth [0-9]+$`),
		regexp.MustCompile(`(?m)^credgw_activations\{state="redeeming"\} 1$`),
		regexp.MustCompile(`(?m)^credgw_activations\{state="locked"\} 0$`),
		regexp.MustCompile(`(?m)^credgw_activation_lockouts_total 0$`),
		// The metrics dashboards used before stay.
		regexp.MustCompile(`(?m)^credgw_grpc_requests_total\{code="OK",method="/credgw.v1.PIVAuth/BeginSession"\} 1$`),
	} {
		if !want.MatchString(metrics) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	checkDashboard(t, metrics)
	checkAlerts(t, metrics)

	// Shutdown flushes the spans.
	stopped = true
	if err := s.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	recv.mu.Lock()
	spans := append([]*tracepb.Span(nil), recv.spans...)
	resources := recv.resources
	recv.mu.Unlock()

	byName := map[string][]*tracepb.Span{}
	for _, sp := range spans {
		byName[sp.GetName()] = append(byName[sp.GetName()], sp)
	}
	for _, name := range []string{"credgw.v1.PIVAuth/BeginSession", "credgw.v1.PIVAuth/CompleteSession",
		"credgw.v1.Enrollment/CreateEnrollment", "credgw.v1.Redemption/Redeem",
		"piv.ocsp_fetch", "issuance.issue", "issuance.lint", "hsm.sign"} {
		if len(byName[name]) == 0 {
			names := make([]string, 0, len(byName))
			for n := range byName {
				names = append(names, n)
			}
			t.Fatalf("no %q span; the receiver got %v", name, names)
		}
	}
	begin := byName["credgw.v1.PIVAuth/BeginSession"][0]
	traceID := hex.EncodeToString(begin.GetTraceId())
	var storeSpan *tracepb.Span
	for _, sp := range spans {
		if strings.HasPrefix(sp.GetName(), "store.") && hex.EncodeToString(sp.GetTraceId()) == traceID {
			storeSpan = sp
		}
	}
	if storeSpan == nil {
		t.Fatal("no store span in BeginSession's trace")
	}
	if got := attr(storeSpan.GetAttributes(), "db.system"); got != "sqlite" {
		t.Errorf("store span %q: db.system %q", storeSpan.GetName(), got)
	}
	if attr(storeSpan.GetAttributes(), "db.operation.name") == "" {
		t.Errorf("store span %q has no db.operation.name", storeSpan.GetName())
	}
	for _, sp := range append(byName["hsm.sign"][:1], byName["issuance.lint"][0]) {
		if len(sp.GetParentSpanId()) == 0 {
			t.Errorf("%s is a root span: want it within the issuance", sp.GetName())
		}
	}
	if len(resources) == 0 || attr(resources[0], "service.name") != "credgw-test" {
		t.Errorf("resource: want service.name credgw-test")
	}

	// No span carries a secret: not the PIN, the session token, the
	// challenge or its signature, the password or the QR secret.
	var text strings.Builder
	for _, sp := range spans {
		text.WriteString(sp.GetName() + "\n")
		for _, kv := range sp.GetAttributes() {
			text.WriteString(kv.GetKey() + "=" + anyString(kv.GetValue()) + "\n")
		}
		for _, ev := range sp.GetEvents() {
			text.WriteString(ev.GetName() + "\n")
			for _, kv := range ev.GetAttributes() {
				text.WriteString(kv.GetKey() + "=" + anyString(kv.GetValue()) + "\n")
			}
		}
		text.WriteString(sp.GetStatus().GetMessage() + "\n")
	}
	secrets.Lock()
	for _, sec := range append(secrets.list, sess.GetSessionToken(), cardPIN) {
		if strings.Contains(text.String(), sec) {
			t.Errorf("a span carries a secret (%d bytes)", len(sec))
		}
	}
	secrets.Unlock()

	// The call's log line carries the trace id the receiver saw.
	found := false
	sc := bufio.NewScanner(strings.NewReader(logs.String()))
	for sc.Scan() {
		var line map[string]any
		if json.Unmarshal(sc.Bytes(), &line) != nil {
			continue
		}
		if line["msg"] == "rpc" && line["method"] == "/credgw.v1.PIVAuth/BeginSession" {
			found = true
			if line["trace_id"] != traceID || line["span_id"] == nil || line["span_id"] == "" {
				t.Errorf("BeginSession's log line: trace_id %v span_id %v, want trace %s", line["trace_id"], line["span_id"], traceID)
			}
		}
	}
	if !found {
		t.Error("no log line for BeginSession")
	}
	// So does a service's own line written within the call: the
	// redemption's "credentials issued".
	redeemTrace := hex.EncodeToString(byName["credgw.v1.Redemption/Redeem"][0].GetTraceId())
	found = false
	sc = bufio.NewScanner(strings.NewReader(logs.String()))
	for sc.Scan() {
		var line map[string]any
		if json.Unmarshal(sc.Bytes(), &line) == nil && line["msg"] == "credentials issued" {
			found = true
			if line["trace_id"] != redeemTrace {
				t.Errorf("the redemption's \"credentials issued\" line: trace_id %v, want %s", line["trace_id"], redeemTrace)
			}
		}
	}
	if !found {
		t.Error("no \"credentials issued\" log line")
	}
}

// storeWide are the gauges each replica reads from the shared store.
var storeWide = map[string]bool{"credgw_activations": true, "credgw_outbox_backlog": true, "credgw_linkage_overdue_seconds": true}

// checkDashboard: docs/grafana-dashboard.json is valid JSON, and every
// metric each panel's queries name is one the gateway exports.
func checkDashboard(t *testing.T, metrics string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "docs", "grafana-dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Type    string `json:"type"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("docs/grafana-dashboard.json: %v", err)
	}
	exported := map[string]bool{}
	for _, line := range strings.Split(metrics, "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name := line[:strings.IndexAny(line, "{ ")]
		exported[name] = true
	}
	metricRe := regexp.MustCompile(`\b((?:credgw|grpc_server)_[a-z_]+)`)
	queries := 0
	for _, p := range dash.Panels {
		if p.Type == "row" {
			continue
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, q := range p.Targets {
			names := metricRe.FindAllString(q.Expr, -1)
			if len(names) == 0 {
				t.Errorf("panel %q: %q names no credgw or grpc_server metric", p.Title, q.Expr)
			}
			for _, n := range names {
				queries++
				if !exported[n] {
					t.Errorf("panel %q: %s is not on /metrics", p.Title, n)
				}
				// Every replica reports the whole store's count: a sum
				// over replicas shows it N times.
				if storeWide[n] && regexp.MustCompile(`sum\s*(by\s*\([^)]*\)\s*)?\(\s*`+n+`\b`).MatchString(q.Expr) {
					t.Errorf("panel %q: %q sums %s, which every replica reports for the whole store: take max", p.Title, q.Expr, n)
				}
			}
		}
	}
	if queries < 12 {
		t.Errorf("the dashboard queries %d metrics, want every panel of docs/deploy.md's list", queries)
	}
}

// checkAlerts: docs/alerts.yml is a Prometheus rule file whose every
// alert has an expression, a summary and a description, and names only
// metrics the gateway exports (and no sum of a store-wide gauge).
func checkAlerts(t *testing.T, metrics string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "docs", "alerts.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var rules struct {
		Groups []struct {
			Name  string `yaml:"name"`
			Rules []struct {
				Alert       string            `yaml:"alert"`
				Expr        string            `yaml:"expr"`
				For         string            `yaml:"for"`
				Labels      map[string]string `yaml:"labels"`
				Annotations map[string]string `yaml:"annotations"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&rules); err != nil {
		t.Fatalf("docs/alerts.yml: %v", err)
	}
	exported := exportedNames(metrics)
	metricRe := regexp.MustCompile(`\b((?:credgw|grpc_server)_[a-z_]+)`)
	n := 0
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			n++
			if r.Alert == "" || r.Expr == "" || r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
				t.Errorf("alert %q: an alert, an expr, a summary and a description are needed", r.Alert)
			}
			names := metricRe.FindAllString(r.Expr, -1)
			if len(names) == 0 {
				t.Errorf("alert %q: %q names no credgw metric", r.Alert, r.Expr)
			}
			for _, m := range names {
				if !exported[m] && !exported[strings.TrimSuffix(m, "_total")+"_total"] {
					t.Errorf("alert %q: %s is not on /metrics", r.Alert, m)
				}
				if storeWide[m] && regexp.MustCompile(`sum\s*(by\s*\([^)]*\)\s*)?\(\s*`+m+`\b`).MatchString(r.Expr) {
					t.Errorf("alert %q sums %s, which every replica reports for the whole store", r.Alert, m)
				}
			}
		}
	}
	if n == 0 {
		t.Fatal("docs/alerts.yml has no alert")
	}
}

// exportedNames are the metric names of a /metrics text.
func exportedNames(metrics string) map[string]bool {
	exported := map[string]bool{}
	for _, line := range strings.Split(metrics, "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		exported[line[:strings.IndexAny(line, "{ ")]] = true
	}
	return exported
}
