package server_test

import (
	"strings"
	"testing"

	"github.com/credgw/credgw/server"
)

// TestConfigErrorsReadable: a config mistake is said in the file's terms
// (line, field, what kind of value is wanted), never in Go's.
func TestConfigErrorsReadable(t *testing.T) {
	tests := []struct {
		name, yaml string
		want       []string
	}{
		{"empty file", "", []string{"the file is empty"}},
		{"only comments", "# nothing yet\n", []string{"the file is empty"}},
		{"empty document", "---\n", []string{"the file is empty"}},
		{"section given a number", "limits: 5\n", []string{"line 1", "limits", "a section"}},
		{"list given a string", "piv: {trust_anchor_files: a.pem}\n", []string{"line 1", "trust_anchor_files", "a list"}},
		{"number given a word", "limits: {new_work: many}\n", []string{"line 1", "new_work", "a whole number"}},
		{"bool given a word", "development: maybe\n", []string{"line 1", "development", "true or false"}},
		{"unknown field", "gateway_id: x\nbogus: 1\n", []string{"line 2", `unknown field "bogus"`}},
		{"a duration in years", "ca:\n  validity: 1y\n", []string{"line 2", "ca.validity", "8760h"}},
		{"a duration in words", "enrollment: {lifetime: 10 minutes}\n", []string{"line 1", "enrollment.lifetime", "10m"}},
		{"unknown nested field", "ca:\n  base_ur: http://x\n", []string{"line 2", `unknown field "ca.base_ur"`}},
		{"not YAML", "tls: [\n", []string{"line"}},
		{"a tab for indentation", "tls:\n\tcert_file: a\n", []string{"line 2", "tab", "spaces"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := server.ParseConfig([]byte(tc.yaml), t.TempDir())
			if err == nil {
				t.Fatal("accepted")
			}
			msg := err.Error()
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q does not mention %q", msg, w)
				}
			}
			for _, goName := range []string{"server.", "Config", "!!", "EOF", "[]string", "int64", "unmarshal"} {
				if strings.Contains(msg, goName) {
					t.Errorf("error %q shows Go's %q", msg, goName)
				}
			}
		})
	}
}

// TestConfigShapeAcceptsWhatYAMLDoes: the shape check refuses nothing the
// decoder takes: merge keys, whole numbers written as floats, nulls.
func TestConfigShapeAcceptsWhatYAMLDoes(t *testing.T) {
	const base = "tls: {cert_file: a, key_file: b}\npiv: {trust_anchor_files: [a]}\n"
	for _, y := range []string{
		base + "x-match: &m {subject_cn: credgw-portal}\ntls2: null\n",
		base + "limits: {max_recv_bytes: 1e6}\n",
		base + "limits: {max_recv_bytes: 2097152.0}\n",
		base + "log: {level: }\n",
	} {
		_, err := server.ParseConfig([]byte(y), t.TempDir())
		if err != nil && strings.Contains(err.Error(), "want ") {
			t.Errorf("%q: %v", y, err)
		}
	}
	merged := "tls: {cert_file: a, key_file: b, client_ca_files: [c]}\npiv: {trust_anchor_files: [a]}\n" +
		"roles:\n  portal:\n    - &m {subject_cn: credgw-portal}\n  admin:\n    - <<: *m\n      subject_cn: credgw-admin\n"
	if _, err := server.ParseConfig([]byte(merged), t.TempDir()); err != nil {
		t.Errorf("a merge key: %v", err)
	}
	if _, err := server.ParseConfig([]byte(base+"limits: {max_recv_bytes: 1.5}\n"), t.TempDir()); err == nil {
		t.Error("a fraction for a whole number was accepted")
	}
}

// TestConfigListenAddresses: config check refuses every listen address
// that serve could not bind (no host:port, a port outside 0-65535), on
// every listener, naming the field; port 0 (any free port) is accepted.
func TestConfigListenAddresses(t *testing.T) {
	const base = "tls: {cert_file: a, key_file: b}\npiv: {trust_anchor_files: [a]}\n"
	tests := []struct{ name, yaml, field, value string }{
		{"management not an address", base + "listen: {management: notanaddress}\n", "listen.management", "notanaddress"},
		{"grpc port past 65535", base + "listen: {grpc: '127.0.0.1:99999'}\n", "listen.grpc", "127.0.0.1:99999"},
		{"http port not a number", base + "listen: {http: '127.0.0.1:http-alt'}\n", "listen.http", "127.0.0.1:http-alt"},
		{"webhook listen without a port", base + "termination_webhook: {secret_file: k, listen: '127.0.0.1'}\n", "termination_webhook.listen", "127.0.0.1"},
		{"webhook listen port past 65535", base + "termination_webhook: {secret_file: k, listen: ':65536'}\n", "termination_webhook.listen", ":65536"},
		{"portal port -1", base + "portal: {listen: '127.0.0.1:-1'}\n", "portal.listen", "127.0.0.1:-1"},
		{"portal empty port", base + "portal: {listen: '127.0.0.1:'}\n", "portal.listen", "127.0.0.1:"},
		// Two listeners on one address: serve's "address already in use"
		// read as if another program had the port.
		{"portal on the gRPC address", base + "listen: {grpc: '127.0.0.1:8443'}\nportal: {listen: '127.0.0.1:8443'}\n", "portal.listen", "127.0.0.1:8443"},
		{"management on every address of the HTTP port", base + "listen: {http: '127.0.0.1:8080', management: ':8080'}\n", "listen.management", ":8080"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := server.ParseConfig([]byte(tc.yaml), t.TempDir())
			if err == nil {
				t.Fatalf("%s: %s accepted", tc.field, tc.value)
			}
			if want := tc.field + " \"" + tc.value + "\""; !strings.Contains(err.Error(), want) {
				t.Fatalf("err = %v, want it to name %s", err, want)
			}
		})
	}
	for _, ok := range []struct{ name, yaml string }{
		{"port 0 everywhere", base + "listen: {grpc: '127.0.0.1:0', http: '127.0.0.1:0', management: '127.0.0.1:0'}\nportal: {listen: '127.0.0.1:0'}\ntermination_webhook: {secret_file: k, listen: '127.0.0.1:0'}\n"},
		{"no host, top port", base + "listen: {grpc: ':65535', management: '[::1]:9090'}\n"},
		{"host names", base + "listen: {grpc: 'localhost:8443', http: 'pki.example.gov:80'}\n"},
		{"one port on two addresses", base + "listen: {grpc: '127.0.0.1:8443'}\nportal: {listen: '127.0.0.2:8443'}\n"},
	} {
		t.Run(ok.name, func(t *testing.T) {
			if _, err := server.ParseConfig([]byte(ok.yaml), t.TempDir()); err != nil {
				t.Fatal(err)
			}
		})
	}
}
