package server

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// socketNames maps the names of inherited sockets (systemd's
// FileDescriptorName=) to the settings they serve.
var socketNames = map[string]string{"grpc": "listen.grpc", "http": "listen.http", "management": "listen.management",
	"webhook": "termination_webhook.listen", "portal": "portal.listen"}

// InheritedListeners returns the listening sockets passed by systemd socket
// activation (sd_listen_fds(3): LISTEN_FDS sockets from fd 3, named by
// LISTEN_FDNAMES; LISTEN_PID, if set, must be this process), keyed for
// WithListeners: name them grpc, http, management, webhook and portal (FileDescriptorName= in
// the .socket unit). Without LISTEN_FDS it returns nil. extra names other
// sockets the caller takes itself (e.g. "hsm" for hsm-sim serve); they
// come back under their own name.
func InheritedListeners(extra ...string) (map[string]net.Listener, error) {
	n, _ := strconv.Atoi(os.Getenv("LISTEN_FDS"))
	if n <= 0 {
		return nil, nil
	}
	if pid := os.Getenv("LISTEN_PID"); pid != "" && pid != strconv.Itoa(os.Getpid()) {
		return nil, nil // meant for another process
	}
	names := strings.Split(os.Getenv("LISTEN_FDNAMES"), ":")
	if len(names) != n {
		return nil, fmt.Errorf("socket activation: LISTEN_FDS=%d but LISTEN_FDNAMES names %d (name each socket grpc, http, management, webhook or portal with FileDescriptorName=)", n, len(names))
	}
	out := map[string]net.Listener{}
	for i, name := range names {
		key, ok := socketNames[name]
		if !ok {
			for _, e := range extra {
				if name == e {
					key, ok = e, true
				}
			}
		}
		if !ok {
			return nil, fmt.Errorf("socket activation: socket %d is named %q: want grpc, http, management, webhook or portal", i, name)
		}
		fd := 3 + i
		syscall.CloseOnExec(fd)
		f := os.NewFile(uintptr(fd), name)
		ln, err := net.FileListener(f)
		f.Close() // FileListener holds its own copy
		if err != nil {
			return nil, fmt.Errorf("socket activation: socket %q (fd %d): %w", name, fd, err)
		}
		out[key] = ln
	}
	os.Unsetenv("LISTEN_FDS")
	os.Unsetenv("LISTEN_FDNAMES")
	os.Unsetenv("LISTEN_PID")
	return out, nil
}
