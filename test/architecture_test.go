package test

import (
	"encoding/json"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/credgw/credgw/"

// layers is docs/architecture.md's package table: for each package of the
// module, its layer and the credgw packages it may import (its non-test
// code). A package missing here fails the test: say in the table where it
// belongs first.
var layers = map[string]struct {
	layer string
	may   []string
}{
	// The API and the leaves.
	"proto/credgw/v1":   {"api", nil},
	"activation/code":   {"contract", []string{"proto/credgw/v1"}},
	"activation/pfx":    {"contract", nil},
	"activation/attest": {"part", nil},
	// Parts.
	"pkcs11":   {"part", nil},
	"store":    {"part", nil},
	"piv":      {"part", []string{"pkcs11"}},
	"issuance": {"part", []string{"piv", "pkcs11", "store"}},
	// Application services.
	"activation/audit":  {"service", []string{"store"}},
	"activation/notify": {"service", []string{"store"}},
	"piv/session":       {"service", []string{"activation/audit", "piv", "store"}},
	"activation": {"service", []string{"activation/attest", "activation/audit", "activation/code", "activation/notify", "activation/pfx",
		"issuance", "piv", "piv/session", "proto/credgw/v1", "store"}},
	"activation/lifecycle": {"service", []string{"activation", "activation/audit", "activation/notify", "issuance", "piv",
		"proto/credgw/v1", "store"}},
	// Clients: the device agent and the card side of PKI-AUTH.
	"agent":         {"client", []string{"activation/code", "activation/pfx", "pkcs11", "proto/credgw/v1"}},
	"piv/pivclient": {"client", []string{"piv", "pkcs11", "proto/credgw/v1"}},
	// Simulation for tests and demos.
	"hsm-sim": {"simulation", []string{"activation/attest", "piv", "pkcs11"}},
	// Transport.
	"portal": {"transport", nil},
	"server": {"transport", []string{"activation", "activation/attest", "activation/audit", "activation/code", "activation/lifecycle", "activation/notify",
		"issuance", "piv", "piv/session", "pkcs11", "portal", "proto/credgw/v1", "store"}},
	// Wiring and tools: anything but test/.
	"cmd/credgw":                  {"wiring", []string{"*"}},
	"cmd/credgw/internal/loadgen": {"wiring", []string{"*"}},
	"test":                        {"tests", []string{"*"}},
}

// deviceForbidden are what the device agent must not link, directly or not:
// the CA, the store, the services and their libraries (module paths match
// exactly, library paths as prefixes).
var deviceForbidden = []string{
	module + "issuance", module + "store", module + "activation", module + "activation/lifecycle", module + "server",
	"github.com/smallstep/", "go.step.sm/", "github.com/jackc/pgx", "github.com/pressly/goose",
	"modernc.org/sqlite", "github.com/mattn/go-sqlite3", "github.com/zmap/zlint", "github.com/zmap/zcrypto",
}

func forbiddenOnDevice(path string) bool {
	for _, f := range deviceForbidden {
		if strings.HasPrefix(f, module) && path == f || !strings.HasPrefix(f, module) && strings.HasPrefix(path, f) {
			return true
		}
	}
	return false
}

type listed struct {
	ImportPath                         string
	Imports, TestImports, XTestImports []string
	Deps                               []string
}

func goList(t *testing.T, args ...string) []listed {
	t.Helper()
	cmd := exec.Command("go", append([]string{"list", "-json"}, args...)...)
	cmd.Dir = filepath.Join("..")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	var ps []listed
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for {
		var p listed
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		ps = append(ps, p)
	}
	return ps
}

// checkImports returns every import of ps that the table forbids.
func checkImports(ps []listed) []string {
	var bad []string
	for _, p := range ps {
		name := strings.TrimPrefix(p.ImportPath, module)
		rule, ok := layers[name]
		if !ok {
			bad = append(bad, fmt.Sprintf("%s: not in the layer table (docs/architecture.md and test/architecture_test.go)", name))
			continue
		}
		for _, imp := range slices.Concat(p.Imports, p.TestImports, p.XTestImports) {
			if imp == module+"test" {
				bad = append(bad, name+" imports test/ (nothing may)")
			}
		}
		for _, imp := range p.Imports {
			dep, own := strings.CutPrefix(imp, module)
			if !own || slices.Contains(rule.may, "*") || slices.Contains(rule.may, dep) {
				continue
			}
			bad = append(bad, fmt.Sprintf("%s (%s) imports %s (%s): not allowed by docs/architecture.md", name, rule.layer, dep, layers[dep].layer))
		}
	}
	return bad
}

// TestImportRules: every package imports only what docs/architecture.md's
// table allows it.
func TestImportRules(t *testing.T) {
	for _, b := range checkImports(goList(t, "./...")) {
		t.Error(b)
	}
}

// TestImportRulesCatch: the check itself finds an arrow from a lower layer
// up, and an import of test/.
func TestImportRulesCatch(t *testing.T) {
	for _, tc := range []struct {
		p    listed
		want string
	}{
		{listed{ImportPath: module + "store", Imports: []string{module + "activation"}}, "store (part) imports activation (service)"},
		{listed{ImportPath: module + "issuance", Imports: []string{module + "server"}}, "issuance (part) imports server (transport)"},
		{listed{ImportPath: module + "agent", Imports: []string{module + "issuance"}}, "agent (client) imports issuance (part)"},
		{listed{ImportPath: module + "activation/code", Imports: []string{module + "store"}}, "activation/code (contract) imports store"},
		{listed{ImportPath: module + "server", XTestImports: []string{module + "test"}}, "server imports test/"},
		{listed{ImportPath: module + "newpkg"}, "newpkg: not in the layer table"},
	} {
		bad := checkImports([]listed{tc.p})
		if len(bad) != 1 || !strings.Contains(bad[0], tc.want) {
			t.Errorf("%s: got %q, want one finding containing %q", tc.p.ImportPath, bad, tc.want)
		}
	}
}

// TestAgentLinksNoCA: the device agent's transitive dependencies name no
// CA, store, database or linter package.
func TestAgentLinksNoCA(t *testing.T) {
	ps := goList(t, "-deps", "./agent")
	for _, p := range ps {
		if forbiddenOnDevice(p.ImportPath) {
			t.Errorf("the agent links %s", p.ImportPath)
		}
	}
	for _, f := range []string{module + "activation", module + "server", "github.com/smallstep/certificates/authority"} {
		if !forbiddenOnDevice(f) {
			t.Errorf("the check lets %s through", f)
		}
	}
	if len(ps) > 450 {
		t.Errorf("the agent links %d packages; it linked 355 when the CA was taken out of it", len(ps))
	}
}

// storeCalls lists the calls of a store method (anything but Close, which
// the owner of the store makes) in one Go source file: X.store.Method(…).
func storeCalls(fset *token.FileSet, f *ast.File) []string {
	var out []string
	ast.Inspect(f, func(n ast.Node) bool {
		call, ok := n.(*ast.CallExpr)
		if !ok {
			return true
		}
		m, ok := call.Fun.(*ast.SelectorExpr)
		if !ok || m.Sel.Name == "Close" {
			return true
		}
		if x, ok := m.X.(*ast.SelectorExpr); ok && x.Sel.Name == "store" {
			out = append(out, fmt.Sprintf("%s: store.%s", fset.Position(call.Pos()), m.Sel.Name))
		}
		return true
	})
	return out
}

// TestServerCallsNoStore: server/ is transport: it opens the store and hands
// it to the services, and every read and write goes through a service.
func TestServerCallsNoStore(t *testing.T) {
	fset := token.NewFileSet()
	files, err := filepath.Glob(filepath.Join("..", "server", "*.go"))
	if err != nil || len(files) == 0 {
		t.Fatalf("server sources: %v", err)
	}
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range storeCalls(fset, f) {
			t.Errorf("%s: server/ calls the store; call a service (docs/architecture.md)", c)
		}
	}
	// The check finds a planted call.
	planted, err := parser.ParseFile(fset, "planted.go", `package server
func (a *adminService) x() { a.s.store.CredentialSet(nil, "id"); a.s.store.Close() }`, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got := storeCalls(fset, planted); len(got) != 1 || !strings.Contains(got[0], "store.CredentialSet") {
		t.Errorf("the check found %q in a planted call", got)
	}
}
