// Type declarations for @wshub/client/react.
import type { ReactNode, ReactElement } from 'react';
import type { Ack, ConnectOptions, ConnectionState, Hub, Json, Message, PublishOptions, SubscriptionState } from './wshub.js';

export interface WshubProviderProps {
  /** v2 options (no `project`); the socket is reopened only when `url` changes. */
  options: ConnectOptions & { project?: undefined };
  children?: ReactNode;
}
export function WshubProvider(props: WshubProviderProps): ReactElement;
/** The provider's hub; null before it connected and during server-side rendering. */
export function useHub(): Hub | null;
export function useConnectionState(): ConnectionState;
/** Subscribes while mounted; returns the subscription's state ('idle' before the hub exists). */
export function useSubscription(project: string, onMessage?: (message: Message) => void): SubscriptionState | 'idle';
/** The users online in `project`, sorted. */
export function usePresence(project: string): string[];
export function usePublish(): (project: string, data: Json, options?: PublishOptions) => Promise<Ack>;
