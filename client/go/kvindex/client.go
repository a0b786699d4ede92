// Package kvindex is a Go client of kvindex-server (kvindex.v1.KvIndex): the
// RPCs with deadlines, bearer token, TLS and mutual TLS; Best, a ranking of a
// MatchResponse a scorer can use; and PodSyncer, which keeps the server's pod
// set equal to a control plane's over one SyncPods stream.
//
// Errors are gRPC status errors, as the server sent them (status.Code(err)
// is codes.InvalidArgument, codes.Unauthenticated, codes.DeadlineExceeded, ...),
// like the C++ client library's absl::Status results.
//
// A Client is safe for concurrent use.
package kvindex

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	v1 "kvindex.dev/client/go/kvindexv1"
)

// Options configure a Client, as the C++ ClientOptions and the CLI's flags do.
type Options struct {
	// Sent as `authorization: Bearer <Token>` on every call when not empty
	// (also over plaintext, as the C++ client does: use TLS outside a trusted network).
	Token string
	// TLS is on when TLS is set or any of the TLS files is named.
	TLS bool
	// PEM roots that verify the server; empty: the system's.
	CAFile string
	// Client certificate chain and key (mutual TLS); both or neither.
	CertFile, KeyFile string
	// Name checked in the server's certificate instead of the host.
	ServerName string
	// Deadline of each call whose context has none; 0 means 30 s.
	Timeout time.Duration
	// Largest message sent or received; 0 means 16 MiB (the server's default).
	MaxMessageBytes int
	// More grpc.DialOptions, applied after the ones above.
	DialOptions []grpc.DialOption
}

const (
	defaultTimeout         = 30 * time.Second
	defaultMaxMessageBytes = 16 << 20
)

// bearer is the per-call credential carrying the token.
type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}

// RequireTransportSecurity is false: the server may take a token in plaintext (tests, loopback).
func (bearer) RequireTransportSecurity() bool { return false }

// TransportCredentials returns what o asks for: nil for plaintext, else TLS
// (system roots or CAFile; mutual TLS with CertFile and KeyFile).
// codes.InvalidArgument when only one of cert/key is named, codes.NotFound
// when a TLS file cannot be read or parsed.
func TransportCredentials(o Options) (credentials.TransportCredentials, error) {
	if !o.TLS && o.CAFile == "" && o.CertFile == "" && o.KeyFile == "" {
		return nil, nil
	}
	if (o.CertFile == "") != (o.KeyFile == "") {
		return nil, status.Error(codes.InvalidArgument, "mutual TLS needs both a certificate and a key file")
	}
	cfg := &tls.Config{ServerName: o.ServerName, MinVersion: tls.VersionTLS12}
	if o.CAFile != "" {
		pem, err := os.ReadFile(o.CAFile)
		if err != nil {
			return nil, status.Errorf(codes.NotFound, "TLS CA file: %v", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, status.Errorf(codes.NotFound, "TLS CA file %s holds no PEM certificate", o.CAFile)
		}
		cfg.RootCAs = pool
	}
	if o.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(o.CertFile, o.KeyFile)
		if err != nil {
			return nil, status.Errorf(codes.NotFound, "TLS client certificate: %v", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return credentials.NewTLS(cfg), nil
}

// DialOptions returns the grpc.DialOptions o asks for (credentials, token,
// message sizes), for callers that build their own grpc.ClientConn.
func DialOptions(o Options) ([]grpc.DialOption, error) {
	creds, err := TransportCredentials(o)
	if err != nil {
		return nil, err
	}
	var opts []grpc.DialOption
	if creds != nil {
		opts = append(opts, grpc.WithTransportCredentials(creds))
	} else {
		opts = append(opts, grpc.WithInsecure())
	}
	if o.Token != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(bearer(o.Token)))
	}
	size := o.MaxMessageBytes
	if size <= 0 {
		size = defaultMaxMessageBytes
	}
	opts = append(opts, grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(size), grpc.MaxCallSendMsgSize(size)))
	return append(opts, o.DialOptions...), nil
}

// Client calls one kvindex-server.
type Client struct {
	conn    *grpc.ClientConn
	stub    v1.KvIndexClient
	timeout time.Duration
}

// Dial returns a Client of the server at target ("host:port"); it connects
// on the first call. Errors as TransportCredentials'.
func Dial(target string, o Options) (*Client, error) {
	opts, err := DialOptions(o)
	if err != nil {
		return nil, err
	}
	conn, err := grpc.Dial(target, opts...)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "dial %s: %v", target, err)
	}
	timeout := o.Timeout
	if timeout <= 0 {
		timeout = defaultTimeout
	}
	return &Client{conn: conn, stub: v1.NewKvIndexClient(conn), timeout: timeout}, nil
}

// Close closes the connection; calls in flight fail.
func (c *Client) Close() error { return c.conn.Close() }

// Stub is the generated client over the same connection (token and TLS
// included), for what this package does not wrap.
func (c *Client) Stub() v1.KvIndexClient { return c.stub }

// withDeadline gives ctx the client's timeout when it has no deadline.
func (c *Client) withDeadline(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, c.timeout)
}

// Match asks which pods hold the longest cached prefix of req's prompt (by
// token_ids, with cache_salt and mm_inputs, or by block_hashes; every field of
// MatchRequest is sent as given). codes.InvalidArgument for an empty model,
// neither or both of token_ids and block_hashes, too many tokens; an unknown
// model is an empty OK answer.
func (c *Client) Match(ctx context.Context, req *v1.MatchRequest) (*v1.MatchResponse, error) {
	ctx, cancel := c.withDeadline(ctx)
	defer cancel()
	return c.stub.Match(ctx, req)
}

// MatchTokens is Match by the prompt's token ids.
func (c *Client) MatchTokens(ctx context.Context, model, lora string, tokens []uint32) (*v1.MatchResponse, error) {
	return c.Match(ctx, &v1.MatchRequest{Model: model, LoraName: lora, TokenIds: tokens})
}

// MatchHashes is Match by index hashes the caller computed (package indexhash).
func (c *Client) MatchHashes(ctx context.Context, model, lora string, hashes []uint64) (*v1.MatchResponse, error) {
	return c.Match(ctx, &v1.MatchRequest{Model: model, LoraName: lora, BlockHashes: hashes})
}

// ListPodsPage asks for one page of pods (ListPodsRequest's paging).
func (c *Client) ListPodsPage(ctx context.Context, req *v1.ListPodsRequest) (*v1.ListPodsResponse, error) {
	ctx, cancel := c.withDeadline(ctx)
	defer cancel()
	return c.stub.ListPods(ctx, req)
}

// listPageSize is the page ListPods asks for: well under the message limit.
const listPageSize = 500

// ListPods returns every known pod, in key order, fetched page by page (so
// any number of pods fits); the deadline applies to each page.
func (c *Client) ListPods(ctx context.Context) ([]*v1.PodInfo, error) {
	var pods []*v1.PodInfo
	token := ""
	for {
		page, err := c.ListPodsPage(ctx, &v1.ListPodsRequest{PageSize: listPageSize, PageToken: token})
		if err != nil {
			return nil, err
		}
		pods = append(pods, page.GetPods()...)
		if page.GetNextPageToken() == "" {
			return pods, nil
		}
		if page.GetNextPageToken() == token {
			return nil, status.Error(codes.Internal, fmt.Sprintf("ListPods: page token %q repeated", token))
		}
		token = page.GetNextPageToken()
	}
}

// GetStats returns the server's totals.
func (c *Client) GetStats(ctx context.Context) (*v1.GetStatsResponse, error) {
	ctx, cancel := c.withDeadline(ctx)
	defer cancel()
	return c.stub.GetStats(ctx, &v1.GetStatsRequest{})
}

// RecordRouting tells the server the gateway sent this prompt to this pod:
// its blocks match as the tier "SPECULATIVE" until the engine confirms them or
// the TTL passes (ttl_ms 0: the server's adaptive TTL). Errors as Match's;
// codes.NotFound for an unknown pod or rank.
func (c *Client) RecordRouting(ctx context.Context, req *v1.RecordRoutingRequest) (*v1.RecordRoutingResponse, error) {
	ctx, cancel := c.withDeadline(ctx)
	defer cancel()
	return c.stub.RecordRouting(ctx, req)
}

// RecordRoutingTokens is RecordRouting by the prompt's token ids, to dp rank
// `rank` of `pod` ("namespace/name"), with the server's adaptive TTL.
func (c *Client) RecordRoutingTokens(ctx context.Context, model, lora, pod string, rank uint32, tokens []uint32) (*v1.RecordRoutingResponse, error) {
	return c.RecordRouting(ctx, &v1.RecordRoutingRequest{Model: model, LoraName: lora, Pod: pod, DpRank: rank, TokenIds: tokens})
}

// SyncPods opens one SyncPods stream, sends updates, half-closes and returns
// the acks (one per update, in order), as the C++ client does; the deadline
// covers the whole stream. A control plane that stays connected uses PodSyncer.
func (c *Client) SyncPods(ctx context.Context, updates []*v1.PodUpdate) ([]*v1.PodUpdateAck, error) {
	ctx, cancel := c.withDeadline(ctx)
	defer cancel()
	stream, err := c.stub.SyncPods(ctx)
	if err != nil {
		return nil, err
	}
	for _, u := range updates {
		if err := stream.Send(u); err != nil {
			break // the reason comes from Recv
		}
	}
	if err := stream.CloseSend(); err != nil {
		return nil, err
	}
	acks := make([]*v1.PodUpdateAck, 0, len(updates))
	for {
		ack, err := stream.Recv()
		if err != nil {
			if err == io.EOF && len(acks) == len(updates) {
				return acks, nil
			}
			if err == io.EOF {
				return acks, status.Errorf(codes.Unavailable, "SyncPods ended after %d of %d acks", len(acks), len(updates))
			}
			return acks, err
		}
		acks = append(acks, ack)
	}
}

// SyncPodsStream opens a SyncPods stream for the caller to drive (token and
// TLS included); it lasts as long as ctx. PodSyncer is built on it.
func (c *Client) SyncPodsStream(ctx context.Context) (v1.KvIndex_SyncPodsClient, error) {
	return c.stub.SyncPods(ctx)
}
