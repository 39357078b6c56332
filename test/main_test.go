package test

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
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

// The listening sockets of the processes the tests start are bound by the
// tests, in one step with their ports (no pick-then-bind race with other
// tests or processes), and passed to `credgw serve` and `hsm-sim serve` by
// socket activation (server.InheritedListeners). They stay bound in the
// test process for the test's life, so a restarted gateway gets the same
// ones (connections meanwhile wait in the backlog, as with systemd).
var sockets = struct {
	sync.Mutex
	byKey map[string][]namedSocket // hsm-sim dir or gateway config path
}{byKey: map[string][]namedSocket{}}

type namedSocket struct {
	name string
	f    *os.File
}

// listenFree binds a port on 127.0.0.1 in one step and returns it with
// the socket's file, to pass to a child.
func listenFree(t *testing.T) (int, *os.File) {
	t.Helper()
	ln, err := hsmsim.ListenFree()
	if err != nil {
		t.Fatal(err)
	}
	f, err := ln.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close(); f.Close() })
	return ln.Addr().(*net.TCPAddr).Port, f
}

// bindSockets binds one socket per name and keeps them for the process
// started with key (an hsm-sim dir, or a gateway's config path); it
// returns their ports in order.
func bindSockets(t *testing.T, key string, names ...string) []int {
	t.Helper()
	var ports []int
	var socks []namedSocket
	for _, n := range names {
		p, f := listenFree(t)
		ports = append(ports, p)
		socks = append(socks, namedSocket{n, f})
	}
	sockets.Lock()
	sockets.byKey[key] = socks
	sockets.Unlock()
	t.Cleanup(func() {
		sockets.Lock()
		delete(sockets.byKey, key)
		sockets.Unlock()
	})
	return ports
}

// devInit runs `credgw dev init --dir dir` on ports bound for its
// simulated issuer and gateway (kept for startServe and the gateway's
// `serve --config dir/credgw.yaml`), and returns its output.
func devInit(t *testing.T, dir string) string {
	t.Helper()
	hsm := bindSockets(t, filepath.Join(dir, "hsm"), "hsm")
	gw := bindSockets(t, filepath.Join(dir, "credgw.yaml"), "grpc", "http", "management", "portal")
	return run(t, nil, true, credgwBin, "dev", "init", "--dir", dir, "--hsm-port", strconv.Itoa(hsm[0]),
		"--grpc-port", strconv.Itoa(gw[0]), "--http-port", strconv.Itoa(gw[1]), "--management-port", strconv.Itoa(gw[2]),
		"--portal-port", strconv.Itoa(gw[3]))
}

// startServe starts `credgw hsm-sim serve` and returns when it listens.
func startServe(t *testing.T, dir string) {
	t.Helper()
	startProcess(t, "hsm-sim serving", credgwBin, "hsm-sim", "serve", "--dir", dir)
}

// socketsFor finds the sockets bound for a command: hsm-sim serve --dir D,
// or serve --config P.
func socketsFor(args []string) []namedSocket {
	sockets.Lock()
	defer sockets.Unlock()
	for i, a := range args {
		if (a == "--dir" || a == "--config") && i+1 < len(args) {
			if s, ok := sockets.byKey[args[i+1]]; ok {
				return s
			}
		}
	}
	return nil
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
	if socks := socketsFor(args); len(socks) > 0 && (args[0] == "serve" || (len(args) > 1 && args[1] == "serve")) {
		var names []string
		for _, s := range socks {
			cmd.ExtraFiles = append(cmd.ExtraFiles, s.f)
			names = append(names, s.name)
		}
		cmd.Env = append(os.Environ(), fmt.Sprintf("LISTEN_FDS=%d", len(socks)), "LISTEN_FDNAMES="+strings.Join(names, ":"))
	}
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
