package registry

// QueuedHeartbeats is how many heartbeats wait for the next batch.
func (c *Client) QueuedHeartbeats() int {
	c.beats.mu.Lock()
	defer c.beats.mu.Unlock()
	return len(c.beats.queue)
}

// StreamOpen tells whether the client has a heartbeat stream open now.
func (c *Client) StreamOpen() bool {
	c.stream.mu.Lock()
	defer c.stream.mu.Unlock()
	return c.stream.conn != nil
}

// FramesFor is what the client writes to renew ids at once.
func FramesFor(ids []string, ping bool) []byte {
	q := make([]*beat, len(ids))
	for i, id := range ids {
		q[i] = &beat{id: id}
	}
	return appendFrames(nil, q, ping)
}
