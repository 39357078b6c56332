package code_test

import (
	"crypto/rand"
	"fmt"
	"testing"

	"github.com/credgw/credgw/activation/code"
	"github.com/credgw/credgw/agent"
)

// TestQRDecodesEveryTime: the PNG at 6 pixels a module decodes to the exact
// payload, for many random payloads (a flaky QR would strand a person).
func TestQRDecodesEveryTime(t *testing.T) {
	for i := 0; i < 40; i++ {
		secret, _ := code.NewSecret()
		pin := make([]byte, 32)
		rand.Read(pin)
		p := code.Payload{Gateway: fmt.Sprintf("gateway-%d.agency.example:8443", i), ID: fmt.Sprintf("abcdefghijklmnop%06d", i), Secret: secret, Pin: pin}
		png, _, err := code.QR(p.String(), -6)
		if err != nil {
			t.Fatal(err)
		}
		got, err := agent.DecodeQR(png)
		if err != nil || got != p.String() {
			t.Fatalf("payload %d: decoded %q, %v", i, got, err)
		}
	}
}
