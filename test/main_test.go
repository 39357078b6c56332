package test

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	hsmsim "github.com/credgw/credgw/hsm-sim"
	"google.golang.org/protobuf/proto"
)

// credgwBin is the binary under test, built once by TestMain.
var credgwBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "credgw-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	credgwBin = filepath.Join(dir, "credgw")
	// The release build plus one flag: credgw_testclock adds
	// `serve --test-clock-offset` (TestClockAgainstTheBinary).
	build := exec.Command("go", "build", "-tags", "credgw_testclock", "-o", credgwBin, "../cmd/credgw")
	build.Env = append(os.Environ(), "CGO_ENABLED=1")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building credgw: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// run runs a program and returns its combined output; it fails the test if
// the exit status is not what wantOK says.
func run(t *testing.T, env []string, wantOK bool, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if wantOK && err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out.String())
	}
	if !wantOK && err == nil {
		t.Fatalf("%s %s succeeded, want failure\n%s", name, strings.Join(args, " "), out.String())
	}
	return out.String()
}

func needTool(t *testing.T, name string) {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		t.Fatalf("%s is not installed: run `make deps`", name)
	}
}

// freePort returns a 127.0.0.1 port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	p, err := hsmsim.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// startServe starts `credgw hsm-sim serve` and returns when it listens.
func startServe(t *testing.T, dir string) {
	t.Helper()
	startProcess(t, "hsm-sim serving", credgwBin, "hsm-sim", "serve", "--dir", dir)
}

// startProcess starts a long-running command and returns when its stderr
// shows marker. The returned stop (also run at cleanup) sends SIGTERM; the
// command must exit 0.
func startProcess(t *testing.T, marker string, name string, args ...string) (stop func()) {
	t.Helper()
	stop, _ = startCmd(t, marker, name, args...)
	return stop
}

// startCmd is startProcess that also returns the command (to kill it).
func startCmd(t *testing.T, marker string, name string, args ...string) (stop func(), cmd *exec.Cmd) {
	t.Helper()
	cmd = exec.Command(name, args...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var log strings.Builder
	done := make(chan struct{})
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cmd.Process.Signal(syscall.SIGTERM)
			err := cmd.Wait()
			<-done
			if killed := cmd.ProcessState != nil && cmd.ProcessState.Sys().(syscall.WaitStatus).Signal() == syscall.SIGKILL; err != nil && !killed {
				t.Errorf("%s did not stop cleanly on SIGTERM: %v\n%s", args[0], err, log.String())
			}
		})
	}
	t.Cleanup(stop)
	sc := bufio.NewScanner(stderr)
	for sc.Scan() {
		log.WriteString(sc.Text() + "\n")
		if strings.Contains(sc.Text(), marker) {
			go func() {
				for sc.Scan() {
					log.WriteString(sc.Text() + "\n")
				}
				close(done)
			}()
			return stop, cmd
		}
	}
	close(done)
	t.Fatalf("%s %s exited before %q:\n%s", name, strings.Join(args, " "), marker, log.String())
	return nil, nil
}

func protoUnmarshal(b []byte, m proto.Message) error { return proto.Unmarshal(b, m) }
