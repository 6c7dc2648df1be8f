package registry

// QueuedHeartbeats is how many heartbeats wait for the next batch.
func (c *Client) QueuedHeartbeats() int {
	c.beats.mu.Lock()
	defer c.beats.mu.Unlock()
	return len(c.beats.queue)
}
