package server

// PendingCuts is how many stream-deadline cuts the gRPC listener holds for
// its open connections, for tests in package server_test.
func (s *Server) PendingCuts() int { return s.grpcConns.pendingCuts() }
