package notify

// SetGatewayGroupForTest names the gateway's group for a test; the
// returned func restores it.
func SetGatewayGroupForTest(name string) func() {
	prev := gatewayGroup
	gatewayGroup = name
	return func() { gatewayGroup = prev }
}
