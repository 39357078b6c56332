package hsmsim

import (
	"crypto/rand"
	"errors"
	"fmt"
	"math/big"
	"net"
)

// FreePort returns a port on 127.0.0.1 that was free a moment ago, for a
// listener whose address must be known before it starts (it goes into a
// config file or a certificate). It draws from 20000–32767, below Linux's
// ephemeral range (32768–60999), so that the outgoing connections of other
// processes cannot take it in the meantime; a port asked of the kernel with
// ":0" comes from the ephemeral range and can.
func FreePort() (int, error) {
	for range 100 {
		n, err := rand.Int(rand.Reader, big.NewInt(32768-20000))
		if err != nil {
			return 0, err
		}
		port := 20000 + int(n.Int64())
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			continue
		}
		ln.Close()
		return port, nil
	}
	return 0, errors.New("hsmsim: no free port on 127.0.0.1 in 20000-32767")
}

// ListenFree binds a TCP listener on 127.0.0.1 at a port drawn as FreePort
// draws, in one step: the port is the caller's from the moment it is known
// (no other process can take it between a pick and a bind). Its address
// goes into configs and certificates; hand the listener itself to the
// server (server.WithListeners, or as an inherited socket).
func ListenFree() (net.Listener, error) {
	for range 100 {
		n, err := rand.Int(rand.Reader, big.NewInt(32768-20000))
		if err != nil {
			return nil, err
		}
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", 20000+int(n.Int64())))
		if err == nil {
			return ln, nil
		}
	}
	return nil, errors.New("hsmsim: no free port on 127.0.0.1 in 20000-32767")
}
