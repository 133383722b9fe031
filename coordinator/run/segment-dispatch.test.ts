import { Metadata, status } from '@grpc/grpc-js';
import { GRPCUnavailableError } from 'etcd3';
import { describe, expect, it } from 'vitest';
import { AppError } from '../../common/errors.js';
import { asAppError, etcdUnavailable } from '../../common/etcd-retry.js';
import { fromServiceError } from '../../common/grpc.js';
import { reassigns } from './segment-dispatch.js';

describe('reassigns: which failed attempts run the segment again on another node', () => {
  it('never for an etcd outage (not the node’s fault: the job stays in flight)', () => {
    const raw = new GRPCUnavailableError('14 UNAVAILABLE: connect ECONNREFUSED 127.0.0.1:2379');
    expect(reassigns(asAppError(raw, { what: 'record transfer' }))).toBe(false);
    expect(reassigns(etcdUnavailable(raw, 'assign segment'))).toBe(false);
  });
  it('for the node’s trouble, as the error is marked where it is made', () => {
    // The node left, its stream broke, or it answered that the attempt lost its claim.
    expect(reassigns(new AppError('UNAVAILABLE', 'node n1 left the cluster'))).toBe(true);
    expect(reassigns(fromServiceError({ code: status.CANCELLED, details: 'Cancelled on server', metadata: new Metadata() }))).toBe(true);
    expect(reassigns(new AppError('FENCED', 'superseded by a newer attempt', { retryable: true }))).toBe(true);
    expect(reassigns(new AppError('CHECKSUM_MISMATCH', 'crc32 mismatch', { retryable: true }))).toBe(true);
    expect(reassigns(asAppError(new Error('socket hang up'), { unknown: { code: 'TRANSCODE_FAILED', retryable: true } }))).toBe(true);
  });
  it('not for what fails everywhere, nor for a deposed leader', () => {
    expect(reassigns(new AppError('TRANSCODE_FAILED', 'ffmpeg: invalid data'))).toBe(false);
    expect(reassigns(new AppError('NOT_LEADER', 'this coordinator is no longer the leader', { retryable: false }))).toBe(false);
    expect(reassigns(new AppError('FENCED', 'leader term 3 is stale', { retryable: false }))).toBe(false);
  });
});
