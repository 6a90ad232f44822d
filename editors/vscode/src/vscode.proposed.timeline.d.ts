// The part of VS Code's proposed Timeline API (vscode.proposed.timeline.d.ts) that dbcode uses.
// Proposed in VS Code 1.100 (code-server 4.100.3): package.json lists it in
// `enabledApiProposals`; desktop VS Code also wants `--enable-proposed-api lsp-dbcode.dbcode`.
// Where it is refused, the File History command stays.

declare module "vscode" {
  export interface TimelineItem {
    timestamp: number;
    label: string;
    id?: string;
    iconPath?: ThemeIcon;
    description?: string;
    tooltip?: string | MarkdownString;
    command?: Command;
    contextValue?: string;
  }

  export interface TimelineChangeEvent {
    uri: Uri;
    reset?: boolean;
  }

  export interface Timeline {
    readonly paging?: { readonly cursor: string | undefined };
    readonly items: readonly TimelineItem[];
  }

  export interface TimelineOptions {
    cursor?: string;
    limit?: number | { timestamp: number; id?: string };
  }

  export interface TimelineProvider {
    readonly onDidChange?: Event<TimelineChangeEvent | undefined>;
    readonly id: string;
    readonly label: string;
    provideTimeline(
      uri: Uri,
      options: TimelineOptions,
      token: CancellationToken,
    ): ProviderResult<Timeline>;
  }

  export namespace workspace {
    export function registerTimelineProvider(
      scheme: string | string[],
      provider: TimelineProvider,
    ): Disposable;
  }
}
