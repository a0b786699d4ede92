package kvindex

import (
	"context"
	"errors"
	"io"
	"sort"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	v1 "kvindex.dev/client/go/kvindexv1"
)

// SyncerOptions tune a PodSyncer; the zero value is usable.
type SyncerOptions struct {
	// Wait before reconnecting: MinBackoff (default 100 ms) after a failure,
	// doubling up to MaxBackoff (default 10 s); back to MinBackoff once a
	// stream's snapshot is acked.
	MinBackoff, MaxBackoff time.Duration
	// Called (from the syncer's goroutine, never under its lock) for every
	// pod the server rejected: pod key and reason. A snapshot refused as a
	// whole is reported with an empty key.
	OnRejected func(pod, reason string)
	// Called for every ack, after OnRejected.
	OnAck func(*v1.PodUpdateAck)
	// Logs reconnects; nil: silent.
	Logf func(format string, args ...any)
}

// PodSyncer keeps kvindex-server's pods equal to a desired set the caller
// feeds it (Upsert, Delete, Replace, or InformerHandler's Kubernetes-shaped
// events). It owns one SyncPods stream: on every (re)connect it sends the
// whole desired set as a snapshot, then one upsert or delete per changed pod;
// a broken stream is reopened with backoff. The server then holds exactly
// the desired set (minus pods it rejects, reported through OnRejected and
// Rejected): a snapshot replaces the server's pods, so the syncer must be
// the only writer of that server's pod set.
//
// Run does not connect before the desired set is declared complete (Replace
// or Ready), so a restarting control plane never sends a partial snapshot
// (which would drop the missing pods' blocks).
//
// Safe for concurrent use.
type PodSyncer struct {
	client *Client
	opts   SyncerOptions
	wake   chan struct{} // capacity 1: something to send

	mu            sync.Mutex
	desired       map[string]*v1.Pod // by key; never mutated once stored
	dirty         map[string]bool    // keys changed since the last send
	needSnapshot  bool               // send the whole set (Replace, reconnect)
	ready         bool               // the desired set is complete
	connected     bool
	snapshotAcked bool   // the current stream's first snapshot was acked
	inflight      []bool // updates sent on the current stream, not acked yet: whether each is a snapshot
	rejected      map[string]string
	changed       chan struct{} // closed and replaced on every state change
}

// NewPodSyncer returns a syncer over client; nothing happens before Run.
func NewPodSyncer(client *Client, opts SyncerOptions) *PodSyncer {
	if opts.MinBackoff <= 0 {
		opts.MinBackoff = 100 * time.Millisecond
	}
	if opts.MaxBackoff < opts.MinBackoff {
		opts.MaxBackoff = 10 * time.Second
		if opts.MaxBackoff < opts.MinBackoff {
			opts.MaxBackoff = opts.MinBackoff
		}
	}
	return &PodSyncer{
		client: client, opts: opts, wake: make(chan struct{}, 1),
		desired: map[string]*v1.Pod{}, dirty: map[string]bool{}, needSnapshot: true,
		rejected: map[string]string{}, changed: make(chan struct{}),
	}
}

// PodKey is a pod's key, "namespace/name".
func PodKey(p *v1.Pod) string { return p.GetNamespace() + "/" + p.GetName() }

// Upsert adds or updates a desired pod (copied); a pod equal to the desired one sends nothing.
func (s *PodSyncer) Upsert(p *v1.Pod) {
	key := PodKey(p)
	s.mu.Lock()
	defer s.mu.Unlock()
	if old, ok := s.desired[key]; ok && proto.Equal(old, p) {
		return
	}
	s.desired[key] = proto.Clone(p).(*v1.Pod)
	s.dirty[key] = true
	s.signalLocked()
}

// Delete forgets a desired pod by key ("namespace/name").
func (s *PodSyncer) Delete(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.desired, key)
	s.dirty[key] = true
	s.signalLocked()
}

// Replace makes pods the whole desired set (an informer's relist) and
// declares it complete; it is sent as one snapshot.
func (s *PodSyncer) Replace(pods []*v1.Pod) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.desired = make(map[string]*v1.Pod, len(pods))
	for _, p := range pods {
		s.desired[PodKey(p)] = proto.Clone(p).(*v1.Pod)
	}
	s.dirty = map[string]bool{}
	s.needSnapshot = true
	s.ready = true
	s.signalLocked()
}

// Ready declares the desired set fed so far complete (e.g. once an
// informer's cache has synced): Run may connect and send it.
func (s *PodSyncer) Ready() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ready = true
	s.signalLocked()
}

// Desired returns the desired pods, ordered by key (copies).
func (s *PodSyncer) Desired() []*v1.Pod {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*v1.Pod, 0, len(s.desired))
	for _, p := range s.desired {
		out = append(out, proto.Clone(p).(*v1.Pod))
	}
	sort.Slice(out, func(i, j int) bool { return PodKey(out[i]) < PodKey(out[j]) })
	return out
}

// Rejected returns the pods whose latest ack was POD_OUTCOME_REJECTED, key -> reason.
func (s *PodSyncer) Rejected() map[string]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]string, len(s.rejected))
	for k, v := range s.rejected {
		out[k] = v
	}
	return out
}

// Synced reports whether the server has acked every change fed so far on the
// current stream.
func (s *PodSyncer) Synced() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.syncedLocked()
}

// WaitSynced waits until Synced, or ctx ends (its error then).
func (s *PodSyncer) WaitSynced(ctx context.Context) error {
	return s.waitUntil(ctx, s.syncedLocked)
}

func (s *PodSyncer) syncedLocked() bool {
	return s.ready && s.connected && s.snapshotAcked && !s.needSnapshot && len(s.inflight) == 0 && len(s.dirty) == 0
}

// signalLocked wakes the sender and the waiters.
func (s *PodSyncer) signalLocked() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
	close(s.changed)
	s.changed = make(chan struct{})
}

// Run keeps the server in sync until ctx ends (it returns ctx's error).
// Call it once, in its own goroutine.
func (s *PodSyncer) Run(ctx context.Context) error {
	backoff := s.opts.MinBackoff
	for {
		if err := s.waitReady(ctx); err != nil {
			return err
		}
		progressed, err := s.session(ctx)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if progressed {
			backoff = s.opts.MinBackoff
		}
		if s.opts.Logf != nil {
			s.opts.Logf("kvindex: SyncPods stream ended (%v); reconnecting in %v", err, backoff)
		}
		timer := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			timer.Stop()
			return ctx.Err()
		case <-timer.C:
		}
		if backoff *= 2; backoff > s.opts.MaxBackoff {
			backoff = s.opts.MaxBackoff
		}
	}
}

func (s *PodSyncer) waitReady(ctx context.Context) error {
	return s.waitUntil(ctx, func() bool { return s.ready })
}

// waitUntil waits until cond (called with s.mu held) holds, or ctx ends (its
// error then); it wakes on each change of the syncer's state.
func (s *PodSyncer) waitUntil(ctx context.Context, cond func() bool) error {
	for {
		s.mu.Lock()
		ok, ch := cond(), s.changed
		s.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// session runs one stream until it breaks; progressed: its snapshot was acked.
func (s *PodSyncer) session(ctx context.Context) (progressed bool, err error) {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := s.client.SyncPodsStream(sctx)
	if err != nil {
		return false, err
	}
	s.mu.Lock()
	s.connected, s.snapshotAcked, s.inflight, s.needSnapshot = true, false, nil, true
	s.signalLocked()
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		progressed = s.snapshotAcked
		s.connected, s.inflight, s.needSnapshot = false, nil, true
		s.signalLocked()
		s.mu.Unlock()
	}()

	recvErr := make(chan error, 1)
	go func() {
		for {
			ack, err := stream.Recv()
			if err != nil {
				if errors.Is(err, io.EOF) {
					err = errors.New("server closed the stream")
				}
				recvErr <- err
				return
			}
			s.handleAck(ack)
		}
	}()

	for {
		for _, u := range s.takeUpdates() {
			if err := stream.Send(u); err != nil {
				break // Recv reports why
			}
		}
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case err := <-recvErr:
			return false, err
		case <-s.wake:
		}
	}
}

// takeUpdates returns what to send now: the whole set as a snapshot when one
// is due, else one upsert or delete per changed pod (in key order), counted in flight.
func (s *PodSyncer) takeUpdates() []*v1.PodUpdate {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*v1.PodUpdate
	if s.needSnapshot {
		snap := &v1.PodSnapshot{Pods: make([]*v1.Pod, 0, len(s.desired))}
		for _, p := range s.desired {
			snap.Pods = append(snap.Pods, p)
		}
		sort.Slice(snap.Pods, func(i, j int) bool { return PodKey(snap.Pods[i]) < PodKey(snap.Pods[j]) })
		out = append(out, &v1.PodUpdate{Update: &v1.PodUpdate_Snapshot{Snapshot: snap}})
		s.needSnapshot = false
	} else {
		keys := make([]string, 0, len(s.dirty))
		for k := range s.dirty {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			if p, ok := s.desired[k]; ok {
				out = append(out, &v1.PodUpdate{Update: &v1.PodUpdate_Upsert{Upsert: p}})
			} else {
				out = append(out, &v1.PodUpdate{Update: &v1.PodUpdate_Delete{Delete: k}})
			}
		}
	}
	s.dirty = map[string]bool{}
	for _, u := range out {
		s.inflight = append(s.inflight, u.GetSnapshot() != nil)
	}
	if len(out) > 0 {
		s.signalLocked()
	}
	return out
}

func (s *PodSyncer) handleAck(ack *v1.PodUpdateAck) {
	type rejection struct{ pod, reason string }
	var rejections []rejection
	note := func(pod string, outcome v1.PodOutcome, reason string) {
		if outcome == v1.PodOutcome_POD_OUTCOME_REJECTED {
			s.rejected[pod] = reason
			rejections = append(rejections, rejection{pod, reason})
		} else {
			delete(s.rejected, pod)
		}
	}
	s.mu.Lock()
	snapshot := false
	if len(s.inflight) > 0 {
		snapshot, s.inflight = s.inflight[0], s.inflight[1:]
	}
	if snapshot {
		s.snapshotAcked = true
		for _, p := range ack.GetPods() {
			note(p.GetPod(), p.GetOutcome(), p.GetReason())
		}
		if ack.GetOutcome() == v1.PodOutcome_POD_OUTCOME_REJECTED {
			rejections = append(rejections, rejection{"", ack.GetReason()})
		}
	} else {
		note(ack.GetPod(), ack.GetOutcome(), ack.GetReason())
	}
	s.signalLocked()
	s.mu.Unlock()
	for _, r := range rejections {
		if s.opts.OnRejected != nil {
			s.opts.OnRejected(r.pod, r.reason)
		}
	}
	if s.opts.OnAck != nil {
		s.opts.OnAck(ack)
	}
}

// InformerHandler feeds a PodSyncer from Kubernetes-informer-shaped events:
// its methods match client-go's cache.ResourceEventHandler (v0.27+), so
// `informer.AddEventHandler(kvindex.InformerHandler{Syncer: s, Convert: f})`
// plugs a client-go control plane in (client-go itself is not needed here).
// Convert turns the informer's object into a kvindex Pod (false: not a pod
// to sync); for OnDelete it must also unwrap cache.DeletedFinalStateUnknown.
// Call Syncer.Ready once the informer has synced.
type InformerHandler struct {
	Syncer  *PodSyncer
	Convert func(obj any) (*v1.Pod, bool)
}

// OnAdd upserts the pod.
func (h InformerHandler) OnAdd(obj any, isInInitialList bool) {
	if p, ok := h.Convert(obj); ok {
		h.Syncer.Upsert(p)
	}
}

// OnUpdate upserts the new pod (and deletes the old key if it changed).
func (h InformerHandler) OnUpdate(oldObj, newObj any) {
	p, ok := h.Convert(newObj)
	if old, okOld := h.Convert(oldObj); okOld && (!ok || PodKey(old) != PodKey(p)) {
		h.Syncer.Delete(PodKey(old))
	}
	if ok {
		h.Syncer.Upsert(p)
	}
}

// OnDelete deletes the pod.
func (h InformerHandler) OnDelete(obj any) {
	if p, ok := h.Convert(obj); ok {
		h.Syncer.Delete(PodKey(p))
	}
}
