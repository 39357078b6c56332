package hsmsim

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"testing"

	"github.com/credgw/credgw/pkcs11"
)

// testEnv is one hsm-sim environment for the whole test binary: SoftHSM reads
// SOFTHSM2_CONF once per initialisation, so one process uses one environment.
var (
	testEnv    *Env
	testModule *pkcs11.Module
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "credgw-hsmsim-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	testEnv, err = Init(dir+"/env", "http://"+ln.Addr().String())
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	srv := &http.Server{Handler: testEnv.Handler(nil)}
	go srv.Serve(ln)
	defer srv.Close()
	testModule, err = testEnv.OpenModule()
	if err != nil {
		fmt.Fprintf(os.Stderr, "hsm-sim tests need SoftHSM (make deps): %v\n", err)
		return 1
	}
	defer testModule.Close()
	return m.Run()
}
