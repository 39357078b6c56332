package loadgen

import (
	"context"
	"io"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc"
)

// latencies records RPC durations per method.
type latencies struct {
	mu sync.Mutex
	d  map[string][]time.Duration
}

func (l *latencies) add(method string, d time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.d[method] = append(l.d[method], d)
}

func (l *latencies) dialOptions() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithChainUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
			start := time.Now()
			err := invoker(ctx, method, req, reply, cc, opts...)
			if err == nil {
				l.add(method, time.Since(start))
			}
			return err
		}),
		grpc.WithChainStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
			cs, err := streamer(ctx, desc, cc, method, opts...)
			if err != nil {
				return nil, err
			}
			return &timedStream{ClientStream: cs, start: time.Now(), done: func(d time.Duration) { l.add(method, d) }}, nil
		}),
	}
}

type timedStream struct {
	grpc.ClientStream
	start time.Time
	done  func(time.Duration)
	once  sync.Once
}

func (s *timedStream) RecvMsg(m any) error {
	err := s.ClientStream.RecvMsg(m)
	if err == io.EOF {
		s.once.Do(func() { s.done(time.Since(s.start)) })
	}
	return err
}

// percentile is the p-th percentile of ds, which it sorts: 0 for none.
func percentile(ds []time.Duration, p int) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	slices.Sort(ds)
	return ds[min(len(ds)-1, len(ds)*p/100)]
}
