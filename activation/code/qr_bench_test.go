package code

import (
	"strings"
	"testing"
)

// BenchmarkQR renders the QR code of an enrollment (PNG at 6 pixels a
// module and the terminal text), once per CreateEnrollment.
func BenchmarkQR(b *testing.B) {
	payload := Payload{Gateway: "gateway.agency.example:8443", ID: strings.Repeat("a", 26), Secret: make([]byte, 32), Pin: make([]byte, 32)}.String()
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := QR(payload, -6); err != nil {
			b.Fatal(err)
		}
	}
}
