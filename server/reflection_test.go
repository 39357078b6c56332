package server_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/credgw/credgw/server"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	rpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"
)

// TestReflection behaves as grpcurl does: it knows nothing of credgw's
// protos, lists the services through server reflection, loads the PIVAuth
// descriptors from the server and calls BeginSession with dynamic messages.
func TestReflection(t *testing.T) {
	conn := portalConn(t)
	ctx := context.Background()
	stream, err := rpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ask := func(req *rpb.ServerReflectionRequest) *rpb.ServerReflectionResponse {
		if err := stream.Send(req); err != nil {
			t.Fatal(err)
		}
		resp, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	list := ask(&rpb.ServerReflectionRequest{MessageRequest: &rpb.ServerReflectionRequest_ListServices{}})
	var names []string
	for _, s := range list.GetListServicesResponse().GetService() {
		names = append(names, s.GetName())
	}
	for _, want := range []string{"credgw.v1.PIVAuth", "credgw.v1.Enrollment", "credgw.v1.Redemption", "credgw.v1.Renewal", "credgw.v1.Admin", "grpc.health.v1.Health"} {
		if !slices.Contains(names, want) {
			t.Errorf("reflection does not list %s (got %v)", want, names)
		}
	}

	// Build the descriptors from what the server sends, in a registry of
	// our own (not the compiled-in one).
	fdResp := ask(&rpb.ServerReflectionRequest{MessageRequest: &rpb.ServerReflectionRequest_FileContainingSymbol{FileContainingSymbol: "credgw.v1.PIVAuth"}})
	files := &descriptorpb.FileDescriptorSet{}
	seen := map[string]bool{}
	var fetch func(raw [][]byte)
	fetch = func(raw [][]byte) {
		for _, b := range raw {
			fd := &descriptorpb.FileDescriptorProto{}
			if err := proto.Unmarshal(b, fd); err != nil {
				t.Fatal(err)
			}
			if seen[fd.GetName()] {
				continue
			}
			seen[fd.GetName()] = true
			for _, dep := range fd.GetDependency() {
				if !seen[dep] {
					r := ask(&rpb.ServerReflectionRequest{MessageRequest: &rpb.ServerReflectionRequest_FileByFilename{FileByFilename: dep}})
					fetch(r.GetFileDescriptorResponse().GetFileDescriptorProto())
				}
			}
			files.File = append(files.File, fd)
		}
	}
	fetch(fdResp.GetFileDescriptorResponse().GetFileDescriptorProto())
	reg, err := protodesc.NewFiles(files)
	if err != nil {
		t.Fatal(err)
	}
	d, err := reg.FindDescriptorByName("credgw.v1.PIVAuth")
	if err != nil {
		t.Fatal(err)
	}
	m := d.(protoreflect.ServiceDescriptor).Methods().ByName("BeginSession")
	if m == nil {
		t.Fatal("no BeginSession method")
	}
	in, out := dynamicpb.NewMessage(m.Input()), dynamicpb.NewMessage(m.Output())
	if err := conn.Invoke(ctx, "/credgw.v1.PIVAuth/BeginSession", in, out); err != nil {
		t.Fatal(err)
	}
	challenge := out.Get(m.Output().Fields().ByName("challenge")).Bytes()
	if len(challenge) != 32 {
		t.Fatalf("challenge of %d bytes through reflection", len(challenge))
	}
	rememberSecret(challenge)
}

// listServices asks stream for the services, as grpcurl list does.
func listServices(stream rpb.ServerReflection_ServerReflectionInfoClient) error {
	if err := stream.Send(&rpb.ServerReflectionRequest{MessageRequest: &rpb.ServerReflectionRequest_ListServices{}}); err != nil {
		return err
	}
	_, err := stream.Recv()
	return err
}

// TestReflectionLimit: reflection streams beyond limits.max_watch_streams
// get ResourceExhausted; those open keep answering, and health watches
// have a count of their own.
func TestReflectionLimit(t *testing.T) {
	const limit = 2
	s := limitedGateway(t, func(l *server.LimitsConfig) { l.MaxWatchStreams = limit })
	conn := dialAddr(t, s.GRPCAddr())
	client := rpb.NewServerReflectionClient(conn)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var open []rpb.ServerReflection_ServerReflectionInfoClient
	for range limit {
		stream, err := client.ServerReflectionInfo(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := listServices(stream); err != nil {
			t.Fatalf("reflection within the limit: %v", err)
		}
		open = append(open, stream)
	}
	extra, err := client.ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	wantCode(t, listServices(extra), codes.ResourceExhausted)
	for _, stream := range open {
		if err := listServices(stream); err != nil {
			t.Fatalf("a reflection stream within the limit: %v", err)
		}
	}
	w, err := healthpb.NewHealthClient(conn).Watch(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Recv(); err != nil {
		t.Fatalf("a health watch beside the reflection streams: %v", err)
	}
}

// TestReflectionDeadline: a reflection stream left open ends with
// DeadlineExceeded at limits.rpc_timeout.
func TestReflectionDeadline(t *testing.T) {
	s := limitedGateway(t, func(l *server.LimitsConfig) { l.RPCTimeout.Duration = 5 * time.Second })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// Far past the deadline, the test gives up: Canceled, not the
	// gateway's DeadlineExceeded.
	defer time.AfterFunc(30*time.Second, cancel).Stop()
	stream, err := rpb.NewServerReflectionClient(dialAddr(t, s.GRPCAddr())).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := listServices(stream); err != nil {
		t.Fatal(err)
	}
	_, err = stream.Recv()
	wantCode(t, err, codes.DeadlineExceeded)
}
